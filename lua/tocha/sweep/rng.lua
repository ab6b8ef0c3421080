-- tocha.sweep.rng: the random numbers a sweep's strategies draw, from xoshiro256** seeded by
-- splitmix64. A generator is made from a list of integers (the sweep's seed, the trial's
-- number, ...), so a trial's proposal does not depend on what other workers drew before it.
local rng = {}

local Rng = {}
Rng.__index = Rng

-- splitmix64: the next state and an output; integer arithmetic wraps, as the method needs
local function splitmix(x)
  x = x + 0x9E3779B97F4A7C15
  local z = x
  z = (z ~ (z >> 30)) * 0xBF58476D1CE4E5B9
  z = (z ~ (z >> 27)) * 0x94D049BB133111EB
  return x, z ~ (z >> 31)
end

local function rotl(x, k) return (x << k) | (x >> (64 - k)) end

--- rng.new(a, b, ...) -> a generator seeded by the integers a, b, ...
function rng.new(...)
  local x = 0x3C6EF372FE94F82B
  local parts = table.pack(...)
  for i = 1, parts.n do
    local v = math.tointeger(parts[i])
    if not v then error("rng.new: seeds must be integers (got " .. tostring(parts[i]) .. ")", 2) end
    local _, z = splitmix(x ~ v) -- the mixed output, so that nearby seeds part ways
    x = z
  end
  local s = {}
  for i = 1, 4 do x, s[i] = splitmix(x) end
  return setmetatable({ s = s }, Rng)
end

--- r:next() -> a 64-bit integer
function Rng:next()
  local s = self.s
  local result = rotl(s[2] * 5, 7) * 9
  local t = s[2] << 17
  s[3] = s[3] ~ s[1]
  s[4] = s[4] ~ s[2]
  s[2] = s[2] ~ s[3]
  s[1] = s[1] ~ s[4]
  s[3] = s[3] ~ t
  s[4] = rotl(s[4], 45)
  return result
end

--- r:random() -> a float in [0, 1)
function Rng:random() return (self:next() >> 11) * 2.0 ^ -53 end

--- r:uniform(a, b) -> a float in [a, b)
function Rng:uniform(a, b) return a + (b - a) * self:random() end

--- r:int(a, b) -> an integer in [a, b]
function Rng:int(a, b) return a + math.floor(self:random() * (b - a + 1)) end

--- r:normal(mean, std) -> a normal draw (Box-Muller)
function Rng:normal(mean, std)
  local u = 1 - self:random() -- in (0, 1]
  local z = math.sqrt(-2 * math.log(u)) * math.cos(2 * math.pi * self:random())
  return (mean or 0) + (std or 1) * z
end

--- r:choice(list) -> one of its elements
function Rng:choice(list) return list[self:int(1, #list)] end

return rng
