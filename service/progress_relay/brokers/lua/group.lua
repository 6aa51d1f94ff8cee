-- A job's group fields (parent, weight, group), written only if the job exists and, for
-- `group`, only if it lists every child of the stored one and has at least as many finished
-- children: children are only added and finished children stay finished, so any other group
-- was read before another instance wrote its newer one, and writing it would undo that (the
-- parent's terminal event would carry the older counts); core/hub.py regroup reads again.
-- KEYS: 1 the job's hash. ARGV: name, JSON value, name, JSON value, ...
-- Returns 1 when written, 0 when the job is gone, -1 when the group is older than the stored.
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local function decode(text)
  if not text then return nil end
  local ok, group = pcall(cjson.decode, text)
  if not ok or type(group) ~= 'table' or type(group.counts) ~= 'table' then return nil end
  return group
end
local function finished(group)
  local c = group.counts
  return (tonumber(c.completed) or 0) + (tonumber(c.failed) or 0) + (tonumber(c.cancelled) or 0)
end
for i = 1, #ARGV, 2 do
  if ARGV[i] == 'group' then
    local stored = decode(redis.call('HGET', KEYS[1], 'group'))
    local written = decode(ARGV[i + 1])
    if stored and written then
      if finished(written) < finished(stored) then return -1 end
      -- Children are only added: a list without one the stored list has is an older one.
      local listed = {}
      for _, id in ipairs(written.children or {}) do listed[id] = true end
      for _, id in ipairs(stored.children or {}) do
        if not listed[id] then return -1 end
      end
    end
  end
end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
