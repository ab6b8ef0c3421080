-- captions the test vocabulary is trained on (tests/ref/gen_text.py, tests/test_text.lua)
local colors = { "red", "green", "blue", "yellow", "purple", "orange", "white", "black" }
local shapes = { "circle", "square", "triangle", "star", "hexagon", "cross" }
local places = { "on the left", "on the right", "at the top", "at the bottom", "in the center" }
local out = {}
for i, c in ipairs(colors) do
  for j, s in ipairs(shapes) do
    out[#out + 1] = string.format("a %s %s %s", (i + j) % 2 == 0 and "small" or "big", c, s .. " " .. places[(i + j) % #places + 1])
    out[#out + 1] = string.format("a %s %s above a %s %s", c, s, colors[(i % #colors) + 1], shapes[(j % #shapes) + 1])
  end
end
out[#out + 1] = "don't you've they'll it's we'd I'm: 12345 and 6.5 percent, café naïve — ok!"
return out
