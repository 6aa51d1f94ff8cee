-- Create a job unless it exists: first forget expired jobs in the indexes, refuse past max jobs,
-- then write the snapshot hash with its expiry and add the job to both indexes.
-- KEYS: 1 job hash, 2 jobs by expiry (ms), 3 jobs by creation, 4 creation counter
-- ARGV: 1 meta (JSON), 2 the job's own ttl ms or "", 3 lifetime ms, 4 max jobs, 5 job id,
--       then optionally 6 the job's webhook URL and 7 its events ("" for the relay's default)
-- Returns 1 (created), 0 (it existed), -1 (full) or -2 (arguments out of range: nothing was
-- written; Redis keeps what a script wrote before an error, so they are checked first).
local MAX_MS = 1e12
local function whole(value, low, high)
  local number = tonumber(value)
  return number and number == math.floor(number) and number >= low and number <= high
end
if not (whole(ARGV[3], 1, MAX_MS) and whole(ARGV[4], 1, 1e15)
    and (ARGV[2] == '' or whole(ARGV[2], 1, MAX_MS))) then
  return -2
end
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
repeat
  local gone = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now_ms, 'LIMIT', 0, 1000)
  if #gone > 0 then
    redis.call('ZREM', KEYS[2], unpack(gone))
    redis.call('ZREM', KEYS[3], unpack(gone))
  end
until #gone < 1000
if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[4]) then return -1 end
redis.call('HSET', KEYS[1], 'created_at', now_ms, 'updated_at', now_ms, 'status', '"pending"',
  'meta', ARGV[1])
if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], 'ttl', ARGV[2]) end
if ARGV[6] and ARGV[6] ~= '' then
  redis.call('HSET', KEYS[1], 'webhook_url', ARGV[6], 'webhook_events', ARGV[7] or '')
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('ZADD', KEYS[2], now_ms + tonumber(ARGV[3]), ARGV[5])
redis.call('ZADD', KEYS[3], redis.call('INCR', KEYS[4]), ARGV[5])
return 1
