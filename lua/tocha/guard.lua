-- tocha/guard.lua: a method called with '.' instead of ':' (opt.step(), m.eval(),
-- net.parameters()) gets no self and fails somewhere inside with a message about something
-- else. guard.methods wraps a class's methods so that such a call says what happened.
local guard = {}

--- guard.methods(cls, is_instance, var, skip): each function of cls (not metamethods, not
--- the names in the set skip) checks that its first argument passes is_instance, raising at
--- the caller "<what>:<name>: called with '.' ..., write <var>:<name>(...)" otherwise. The
--- wrapper tail-calls the method, so the method's own errors still point at the caller.
function guard.methods(cls, is_instance, var, what, skip)
  for name, fn in pairs(cls) do
    if type(fn) == "function" and not name:match("^__") and not (skip and skip[name]) then
      cls[name] = function(self, ...)
        if not is_instance(self) then
          error(string.format("%s:%s: called with '.' (self is %s): write %s:%s(...), not %s.%s(...)", what, name,
            self == nil and "nil" or "a " .. type(self), var, name, var, name), 2)
        end
        return fn(self, ...)
      end
    end
  end
  return cls
end

return guard
