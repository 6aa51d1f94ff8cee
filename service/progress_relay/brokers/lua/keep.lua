-- A group goes as one: a parent's children live at least as long as their parent. Each child's
-- keys that would expire before the parent's hash get its expiry, and so does the child's entry
-- in the jobs index (by expiry), so that a child finished early is not gone while the parent
-- still counts it. Only extends; writes nothing for a parent that has gone.
-- KEYS: 1 the parent's hash, 2 the jobs index (sorted set of job ids by expiry, ms), then per
--       child its keys (as many as ARGV[1] says), in the order of ARGV[2..]
-- ARGV: 1 keys per child, then the children's ids
local per = tonumber(ARGV[1])
if not per or per < 1 or #KEYS ~= 2 + per * (#ARGV - 1) then return -2 end
local ttl = redis.call('PTTL', KEYS[1])
if ttl <= 0 then return 0 end
local now = redis.call('TIME')
local until_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) + ttl
local kept = 0
for c = 2, #ARGV do
  local base = 2 + per * (c - 2)
  for k = base + 1, base + per do
    local own = redis.call('PTTL', KEYS[k])
    if own > 0 and own < ttl then
      redis.call('PEXPIRE', KEYS[k], ttl)
      kept = kept + 1
    end
  end
  local score = redis.call('ZSCORE', KEYS[2], ARGV[c])
  if score and tonumber(score) < until_ms then
    redis.call('ZADD', KEYS[2], 'XX', until_ms, ARGV[c])
  end
end
return kept
