-- Read jobs' snapshots, log tails, history and streamed text at one instant, so that they agree
-- (a `reset` holds exactly the text of the events up to its id). Only reads: Redis runs it even
-- when it is past its maxmemory, where it refuses a MULTI (reads and streams go on when full).
-- KEYS: per job, its hash, log tail, history stream and text
-- ARGV: 1 content bytes, then per job: where its history is read from ("" none, "-" its first
--       event, "(SEQ-0" after SEQ), and its text: "" (not needed), "all", or a seq SEQ (only
--       when history no longer holds every event after SEQ: the reader then gets a `reset`,
--       which carries the text; a resume within the ring does not move the text at all)
-- Returns per job {the hash's fields and values, the log entries, the history entries,
-- the text's stored size or -1 when not read, its last `content bytes` bytes}.
local bound = tonumber(ARGV[1])
local out = {}
for i = 1, (#ARGV - 1) / 2 do
  local hash, history, text = KEYS[4 * i - 3], KEYS[4 * i - 1], KEYS[4 * i]
  local from, wanted = ARGV[2 * i], ARGV[2 * i + 1]
  local entries = {}
  if from ~= '' then
    entries = redis.call('XRANGE', history, from, '+')
  end
  local stored, tail = -1, ''
  if wanted ~= '' and (wanted == 'all'
      or tonumber(wanted) < tonumber(redis.call('HGET', hash, 'dropped') or '0')) then
    stored = redis.call('STRLEN', text)
    tail = redis.call('GETRANGE', text, -bound, -1)
  end
  out[i] = {redis.call('HGETALL', hash), redis.call('LRANGE', KEYS[4 * i - 2], 0, -1), entries,
    stored, tail}
end
return out
