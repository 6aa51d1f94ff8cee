-- Read jobs' snapshots, log tails and history at one instant. Only reads: Redis runs it even
-- when it is past its maxmemory, where it refuses a MULTI (reads and streams go on when full).
-- KEYS: per job, its hash, log tail and history stream
-- ARGV: per job, where its history is read from: "" (none), "-" (its first event) or "(SEQ-0"
-- Returns per job {the hash's fields and values, the log entries, the history entries}.
local out = {}
for i = 1, #ARGV do
  local entries = {}
  if ARGV[i] ~= '' then
    entries = redis.call('XRANGE', KEYS[3 * i], ARGV[i], '+')
  end
  out[i] = {redis.call('HGETALL', KEYS[3 * i - 2]), redis.call('LRANGE', KEYS[3 * i - 1], 0, -1),
    entries}
end
return out
