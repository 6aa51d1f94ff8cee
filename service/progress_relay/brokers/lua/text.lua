-- A job's streamed text, read in the MULTI that reads its snapshot and history, so that all
-- three agree: always (ARGV[1] ""), or only when history no longer holds every event after seq
-- ARGV[1] (the reader then gets a `reset`, which carries the text); a resume within the ring
-- does not move the text at all.
-- KEYS: 1 job hash, 2 the text
-- ARGV: 1 the seq the reader has seen, or "", 2 content bytes
-- Returns {stored size, its last `content bytes` bytes}, or {-1, ""} when it is not needed.
if ARGV[1] ~= '' then
  local dropped = tonumber(redis.call('HGET', KEYS[1], 'dropped') or '0')
  if tonumber(ARGV[1]) >= dropped then return {-1, ''} end
end
return {redis.call('STRLEN', KEYS[2]), redis.call('GETRANGE', KEYS[2], -tonumber(ARGV[2]), -1)}
