-- tocha.json: a small, strict JSON reader and writer for the files tocha exchanges with
-- other tools (tokenizer vocabularies, configs, metrics.jsonl). Objects are Lua tables,
-- arrays are Lua lists, null is json.null. decode raises "json: <what> at <position>".
local json = {}

json.null = setmetatable({}, { __tostring = function() return "null" end })

local escapes = { ['"'] = '"', ["\\"] = "\\", ["/"] = "/", b = "\b", f = "\f", n = "\n", r = "\r", t = "\t" }

local function fail(msg, pos) error(string.format("json: %s at position %d", msg, pos), 0) end

local function skip(s, i)
  return s:find("[^ \t\r\n]", i) or #s + 1
end

local decode_value

local function decode_string(s, i)
  local out, j = {}, i + 1
  while true do
    local c = s:sub(j, j)
    if c == "" then fail("unterminated string", i) end
    if c == '"' then return table.concat(out), j + 1 end
    if c == "\\" then
      local e = s:sub(j + 1, j + 1)
      if e == "u" then
        local hex = s:sub(j + 2, j + 5)
        if not hex:match("^%x%x%x%x$") then fail("bad \\u escape", j) end
        local cp = tonumber(hex, 16)
        j = j + 6
        if cp >= 0xD800 and cp <= 0xDBFF and s:sub(j, j + 1) == "\\u" then -- a surrogate pair
          local lo = tonumber(s:sub(j + 2, j + 5), 16)
          if lo and lo >= 0xDC00 and lo <= 0xDFFF then
            cp = 0x10000 + (cp - 0xD800) * 0x400 + (lo - 0xDC00)
            j = j + 6
          end
        end
        out[#out + 1] = utf8.char(cp)
      elseif escapes[e] then
        out[#out + 1] = escapes[e]
        j = j + 2
      else fail("bad escape", j) end
    else
      local k = s:find('["\\]', j) or #s + 1
      out[#out + 1] = s:sub(j, k - 1)
      j = k
    end
  end
end

function decode_value(s, i)
  i = skip(s, i)
  local c = s:sub(i, i)
  if c == "{" then
    local obj = {}
    i = skip(s, i + 1)
    if s:sub(i, i) == "}" then return obj, i + 1 end
    while true do
      if s:sub(i, i) ~= '"' then fail("expected a string key", i) end
      local k
      k, i = decode_string(s, i)
      i = skip(s, i)
      if s:sub(i, i) ~= ":" then fail("expected ':'", i) end
      obj[k], i = decode_value(s, i + 1)
      i = skip(s, i)
      local d = s:sub(i, i)
      if d == "}" then return obj, i + 1 end
      if d ~= "," then fail("expected ',' or '}'", i) end
      i = skip(s, i + 1)
    end
  elseif c == "[" then
    local arr = {}
    i = skip(s, i + 1)
    if s:sub(i, i) == "]" then return arr, i + 1 end
    while true do
      arr[#arr + 1], i = decode_value(s, i)
      i = skip(s, i)
      local d = s:sub(i, i)
      if d == "]" then return arr, i + 1 end
      if d ~= "," then fail("expected ',' or ']'", i) end
      i = i + 1
    end
  elseif c == '"' then return decode_string(s, i)
  elseif s:sub(i, i + 3) == "true" then return true, i + 4
  elseif s:sub(i, i + 4) == "false" then return false, i + 5
  elseif s:sub(i, i + 3) == "null" then return json.null, i + 4
  -- not JSON, but Python's json module writes them (diffusers' configs hold -Infinity)
  elseif s:sub(i, i + 7) == "Infinity" then return math.huge, i + 8
  elseif s:sub(i, i + 8) == "-Infinity" then return -math.huge, i + 9
  elseif s:sub(i, i + 2) == "NaN" then return 0 / 0, i + 3
  else
    local num = s:match("^-?%d+%.?%d*[eE]?[-+]?%d*", i)
    if not num or num == "" or num == "-" then fail("unexpected character '" .. c .. "'", i) end
    -- 2 is an integer, 2.0 and 2e0 floats, as Python reads them
    local v = num:find("[.eE]") and tonumber(num) or math.tointeger(tonumber(num)) or tonumber(num)
    if not v then fail("bad number", i) end
    return v, i + #num
  end
end

--- json.decode(text) -> value
function json.decode(s)
  if type(s) ~= "string" then error("json.decode: expected a string", 2) end
  local ok, v = pcall(function()
    local v, i = decode_value(s, 1)
    i = skip(s, i)
    if i <= #s then fail("trailing characters", i) end
    return v
  end)
  if not ok then error(v, 2) end -- the parser's message, at the caller's line
  return v
end

local function encode_string(s)
  return '"' .. s:gsub('[%c"\\]', function(c)
    local map = { ['"'] = '\\"', ["\\"] = "\\\\", ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t" }
    return map[c] or string.format("\\u%04x", c:byte())
  end) .. '"'
end

local function is_list(t)
  local n = #t
  for k in pairs(t) do
    if math.type(k) ~= "integer" or k < 1 or k > n then return false end
  end
  return n > 0 or next(t) == nil
end

local function encode(v, sort, out)
  local ty = type(v)
  if v == json.null or v == nil then out[#out + 1] = "null"
  elseif ty == "boolean" then out[#out + 1] = tostring(v)
  elseif ty == "number" then
    if v ~= v or v == math.huge or v == -math.huge then out[#out + 1] = "null" -- JSON has no NaN or inf
    elseif math.type(v) == "integer" then out[#out + 1] = tostring(v)
    else -- the shortest form that reads back as the same double, a float still (1.0, as Python's)
      local short = string.format("%.15g", v)
      if tonumber(short) ~= v then short = string.format("%.17g", v) end
      if not short:find("[.eEn]") then short = short .. ".0" end
      out[#out + 1] = short
    end
  elseif ty == "string" then out[#out + 1] = encode_string(v)
  elseif ty == "table" then
    if is_list(v) and next(v) ~= nil then
      out[#out + 1] = "["
      for i, x in ipairs(v) do
        if i > 1 then out[#out + 1] = "," end
        encode(x, sort, out)
      end
      out[#out + 1] = "]"
    else
      local keys = {}
      for k in pairs(v) do
        if type(k) ~= "string" and type(k) ~= "number" then error("json.encode: keys must be strings", 3) end
        keys[#keys + 1] = k
      end
      if sort then table.sort(keys, function(a, b) return tostring(a) < tostring(b) end) end
      out[#out + 1] = "{"
      for i, k in ipairs(keys) do
        if i > 1 then out[#out + 1] = "," end
        out[#out + 1] = encode_string(tostring(k))
        out[#out + 1] = ":"
        encode(v[k], sort, out)
      end
      out[#out + 1] = "}"
    end
  else error("json.encode: cannot encode a " .. ty, 3) end
end

--- json.encode(value, {sort_keys = true}) -> text (one line)
function json.encode(v, opts)
  local out = {}
  encode(v, not (opts and opts.sort_keys == false), out)
  return table.concat(out)
end

function json.read_file(path)
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local text = f:read("a")
  f:close()
  local ok, v = pcall(json.decode, text)
  if not ok then return nil, path .. ": " .. v end
  return v
end

return json
