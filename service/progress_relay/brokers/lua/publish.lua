-- Publish a batch of events to one job, atomically: renew the epoch if Redis lost it, take ids
-- from the deployment-wide sequence, append to the job's history stream (trimmed to the ring
-- size), update the snapshot hash, log tail, ETA points and streamed text, set the job's
-- expiration, and PUBLISH the batch to the job's channel.
-- Nothing is written before every argument, and the job's own stored lifetime, has been
-- checked: Redis keeps what a script wrote before an error, so a script that failed half-way
-- would leave a publish half applied (stored, yet never sent to live readers). A Redis past its
-- maxmemory refuses the first command that would grow memory, which comes before anything but
-- the removal of expired index entries: a refused publish changes nothing either.
-- The ETA is estimated here, as wire/snapshot.py EtaEstimator does (over the last 10 percent
-- points, at Redis time), and put into the data of each progress event whose publisher sent no
-- `eta_seconds` of its own, as wire/snapshot.py with_eta does: live readers, history and the
-- snapshot's `eta_seconds` show the same number.
--
-- KEYS: 1 epoch, 2 seq, 3 job hash, 4 history stream, 5 logs list, 6 eta list,
--       7 jobs index (sorted set of job ids by expiry time, ms), 8 seen idempotency keys
--       (hash key -> seq), 9 the same keys by when they were seen (sorted set, ms),
--       10 jobs by creation (sorted set of job ids by creation number), 11 creation counter,
--       12 the streamed text (a string)
-- ARGV: 1 candidate epoch, 2 channel, 3 ring events, 4 ring bytes, 5 log tail,
--       6 idle ttl ms, 7 finished ttl ms, 8 mode ("publish" or "cancel"), 9 final status or "",
--       10 batch body (JSON array of [name, data]), 11 n, 12 max jobs, 13 job id,
--       14 idempotency window ms, 15 idempotency keys kept per job,
--       16 content bytes kept, 17 stored text size past which it is trimmed, 18 the batch's
--       `content` texts joined (UTF-8),
--       then n quadruples (name, data, log entry "[level,message]" or "", key or ""),
--       then n eta percents ("" when none), then n ETA modes ("" not a progress, "-" the relay
--       estimates, else the publisher's own eta_seconds as JSON), then m, then m pairs (field,
--       JSON value), then, when webhooks are on, 3 more: the outbox's length, the relay's
--       default events ("terminal", "stages", "all") and "1" if it has a default URL, else ""
-- KEYS when webhooks are on: 13 the webhook outbox stream, 14 its count of dropped deliveries
-- Returns {"ok", epoch, first seq, cancel_requested, the job's parent (its JSON, "" when none:
-- core/groups.py), then per event the eta_seconds added to its data or ""} or {"finished", status}
-- or {"missing"}
-- or {"already"} (a cancel that was already requested) or {"full"} (a new job past max jobs)
-- or {"invalid", what} (arguments out of range: nothing was written)
-- or {"seen", epoch, cancel_requested, seq or "0" for each event}: some keys were seen
-- before, nothing was published, and the caller publishes the others again on their own.

-- Lifetimes in ms: at most what PEXPIRE takes and a double holds exactly (config.py).
local MAX_MS = 1e12
local function whole(value, low, high)
  local number = tonumber(value)
  if number and number == math.floor(number) and number >= low and number <= high then
    return number
  end
  return nil
end

local n = whole(ARGV[11], 1, 1e6)
if not n then return {'invalid', 'the number of events'} end
local base = 18
local eta_base = base + 4 * n
local own_base = eta_base + n
local m = whole(ARGV[own_base + n + 1], 0, 1e6)
local hooks_at = own_base + n + 2 + 2 * (m or 0)
if not m or (#ARGV ~= hooks_at - 1 and #ARGV ~= hooks_at + 2) then
  return {'invalid', 'the argument count'}
end
if ARGV[hooks_at] and not (whole(ARGV[hooks_at], 1, 1e12) and KEYS[14]) then
  return {'invalid', 'the webhook outbox'}
end
if not (whole(ARGV[3], 1, 1e12) and whole(ARGV[4], 1, 1e15) and whole(ARGV[5], 1, 1e12)
    and whole(ARGV[6], 1, MAX_MS) and whole(ARGV[7], 1, MAX_MS) and whole(ARGV[12], 1, 1e15)
    and whole(ARGV[14], 1, MAX_MS) and whole(ARGV[15], 1, 1e15) and whole(ARGV[16], 1, 1e15)
    and whole(ARGV[17], 1, 1e15)) then
  return {'invalid', 'a size or lifetime'}
end
if ARGV[8] ~= 'publish' and ARGV[8] ~= 'cancel' then return {'invalid', 'the mode'} end
for i = 1, n do
  local percent = ARGV[eta_base + i]
  if percent ~= '' and not (tonumber(percent) and tonumber(percent) >= 0
      and tonumber(percent) <= 100) then
    return {'invalid', 'a percent'}
  end
  local own = ARGV[own_base + i]
  if own ~= '' and own ~= '-' and own ~= 'null' and not tonumber(own) then
    return {'invalid', 'an ETA'}
  end
end

local epoch = redis.call('GET', KEYS[1])
if not epoch then
  epoch = ARGV[1]
  redis.call('SET', KEYS[1], epoch)
  redis.call('DEL', KEYS[2])
end

local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
-- What this script reads of the job's hash, in one call (false: not set). Nothing below writes
-- these fields before they are used, but a new job's status and a cancel's cancel_requested.
local job = redis.call('HMGET', KEYS[3], 'status', 'ttl', 'last_seq', 'bytes', 'dropped',
  'eta_seconds', 'cancel_requested', 'stage', 'parent')

-- Forget members of `set` scored at most `score`, in `also` as well.
local function forget(set, score, also)
  repeat
    local gone = redis.call('ZRANGEBYSCORE', set, '-inf', score, 'LIMIT', 0, 1000)
    if #gone > 0 then
      redis.call('ZREM', set, unpack(gone))
      if also[1] then redis.call('ZREM', also[1], unpack(gone)) end
      if also[2] then redis.call('HDEL', also[2], unpack(gone)) end
    end
  until #gone < 1000
end

-- Idempotency keys are checked before anything else: a retry whose events were all published
-- gets their ids even after the job has finished.
local has_keys = false
for i = 1, n do
  if ARGV[base + 4 * i] ~= '' then has_keys = true end
end
if has_keys then
  forget(KEYS[9], now_ms - tonumber(ARGV[14]), {nil, KEYS[8]})
  local known = {}
  local any = false
  for i = 1, n do
    local key = ARGV[base + 4 * i]
    local seq = key ~= '' and redis.call('HGET', KEYS[8], key)
    if seq then
      known[i] = seq
      any = true
    else
      known[i] = '0'
    end
  end
  if any then
    local cancel = job[7] == 'true'
    return {'seen', epoch, cancel and 1 or 0, unpack(known)}
  end
end

local status = job[1]
local mode = ARGV[8]
if status == '"completed"' or status == '"failed"' or status == '"cancelled"' then
  return {'finished', status}
end
if not status then
  if mode == 'cancel' then
    return {'missing'}
  end
  forget(KEYS[7], now_ms, {KEYS[10]})
  if redis.call('ZCARD', KEYS[7]) >= tonumber(ARGV[12]) then
    return {'full'}
  end
  redis.call('HSET', KEYS[3], 'created_at', now_ms, 'status', '"pending"')
  redis.call('ZADD', KEYS[10], redis.call('INCR', KEYS[11]), ARGV[13])
  status = '"pending"'
end
if mode == 'cancel' and job[7] == 'true' then
  return {'already'}
end
-- The job's lifetime from now on, decided before anything is written: the finished TTL after a
-- terminal event, else its own `ttl` (set by create.lua; one out of range is ignored), else the
-- idle TTL.
local ttl
if ARGV[9] ~= '' then
  ttl = tonumber(ARGV[7])
else
  ttl = whole(job[2], 1, MAX_MS) or tonumber(ARGV[6])
end
-- Stream ids must grow: history ahead of the sequence (the sequence was lost, the job was not)
-- cannot take these events.
local next_seq = tonumber(redis.call('GET', KEYS[2]) or '0') + 1
if next_seq <= tonumber(job[3] or '0') then
  return {'invalid', 'the job history is ahead of the sequence'}
end

local first = redis.call('INCRBY', KEYS[2], n) - n + 1
local ring_events = tonumber(ARGV[3])
local ring_bytes = tonumber(ARGV[4])
local bytes = tonumber(job[4] or '0')
local dropped = job[5] or '0'
local has_logs = false
-- The snapshot's eta_seconds as JSON, event by event.
local eta = job[6] or 'null'
local eta_changed = false
local added = {}
local datas = {}
local function estimate(percent, text)
  local points = redis.call('LRANGE', KEYS[6], 0, -1)  -- at most 10
  local last = points[#points]
  if last and percent < tonumber(string.match(last, ' (.+)$')) then
    redis.call('DEL', KEYS[6])  -- progress went back (a new phase): the old rate says nothing
    points = {}
  end
  local point = now_ms .. ' ' .. text
  redis.call('RPUSH', KEYS[6], point)
  points[#points + 1] = point
  if #points > 10 then
    redis.call('LTRIM', KEYS[6], -10, -1)
    table.remove(points, 1)
  end
  if percent >= 100 then return '0.0' end
  if #points < 3 then return 'null' end
  local t0, p0 = string.match(points[1], '^(%d+) (.+)$')
  local t1, p1 = string.match(points[#points], '^(%d+) (.+)$')
  t0, p0, t1, p1 = tonumber(t0), tonumber(p0), tonumber(t1), tonumber(p1)
  if p1 <= p0 or t1 <= t0 then return 'null' end
  return string.format('%.1f', (100 - p1) * (t1 - t0) / 1000 / (p1 - p0))
end
for i = 1, n do
  local seq = first + i - 1
  local name = ARGV[base + 4 * i - 3]
  local data = ARGV[base + 4 * i - 2]
  local log_entry = ARGV[base + 4 * i - 1]
  local key = ARGV[base + 4 * i]
  local percent = ARGV[eta_base + i]
  local own = ARGV[own_base + i]
  if percent ~= '' then
    eta = estimate(tonumber(percent), percent)
    eta_changed = true
  end
  added[i] = ''
  if own == '-' then
    if eta ~= 'null' then
      data = string.sub(data, 1, -2) .. (#data > 2 and ',' or '') .. '"eta_seconds":' .. eta .. '}'
      added[i] = eta
    end
  elseif own ~= '' then
    eta = own
    eta_changed = true
  end
  datas[i] = data
  if key ~= '' then
    redis.call('HSET', KEYS[8], key, seq)
    redis.call('ZADD', KEYS[9], now_ms, key)
  end
  -- the exact size of the frame "id: E-S\nevent: N\ndata: D\n\n", as the memory ring counts it
  local size = 22 + #epoch + #tostring(seq) + #name + #data
  redis.call('XADD', KEYS[4], seq .. '-0', 'e', name, 'd', data, 's', size)
  bytes = bytes + size
  if log_entry ~= '' then
    redis.call('RPUSH', KEYS[5], '[' .. seq .. ',' .. now_ms .. ',' .. log_entry .. ']')
    has_logs = true
  end
end
if has_logs then
  redis.call('LTRIM', KEYS[5], -tonumber(ARGV[5]), -1)
end
if has_keys then
  local excess = redis.call('ZCARD', KEYS[9]) - tonumber(ARGV[15])
  if excess > 0 then
    local oldest = redis.call('ZRANGE', KEYS[9], 0, excess - 1)
    redis.call('ZREM', KEYS[9], unpack(oldest))
    redis.call('HDEL', KEYS[8], unpack(oldest))
  end
end

-- Trim the history: the newest event always stays, even when it alone is over the byte limit.
local length = redis.call('XLEN', KEYS[4])
while length > 1 and (length > ring_events or bytes > ring_bytes) do
  local oldest = redis.call('XRANGE', KEYS[4], '-', '+', 'COUNT', 1)[1]
  local fields = oldest[2]
  local size = 0
  for j = 1, #fields, 2 do
    if fields[j] == 's' then size = tonumber(fields[j + 1]) end
  end
  redis.call('XDEL', KEYS[4], oldest[1])
  bytes = bytes - size
  dropped = string.match(oldest[1], '^(%d+)')
  length = length - 1
end

-- The streamed text, as wire/content.py ContentTail keeps it: appended; past the trim limit,
-- the newest `content bytes` from a character's first byte (UTF-8 continuation bytes are
-- 0x80-0xBF), the field content_truncated set once.
local content_truncated = false
if ARGV[18] ~= '' then
  local stored = redis.call('APPEND', KEYS[12], ARGV[18])
  if stored > tonumber(ARGV[17]) then
    local kept = redis.call('GETRANGE', KEYS[12], stored - tonumber(ARGV[16]), -1)
    local from = 1
    while from <= #kept do
      local byte = string.byte(kept, from)
      if byte < 128 or byte >= 192 then break end
      from = from + 1
    end
    redis.call('SET', KEYS[12], string.sub(kept, from))
    content_truncated = true
  end
end

local stage_before = job[8]
local m_at = own_base + n + 1
local m = tonumber(ARGV[m_at])
local fields = {'updated_at', now_ms, 'last_seq', first + n - 1, 'bytes', bytes, 'dropped', dropped}
if status == '"pending"' and mode ~= 'cancel' then
  table.insert(fields, 'status')
  table.insert(fields, '"running"')
end
if content_truncated then
  table.insert(fields, 'content_truncated')
  table.insert(fields, 'true')
end
if eta_changed then  -- before the pairs: a terminal event's eta_seconds null comes after it
  table.insert(fields, 'eta_seconds')
  table.insert(fields, eta)
end
local cancel_requested = job[7]
for j = 1, m do
  table.insert(fields, ARGV[m_at + 2 * j - 1])
  table.insert(fields, ARGV[m_at + 2 * j])
  if ARGV[m_at + 2 * j - 1] == 'cancel_requested' then cancel_requested = ARGV[m_at + 2 * j] end
end
redis.call('HSET', KEYS[3], unpack(fields))

-- The job's keys expire together, `ttl` after its last publish, as its score in the jobs index
-- says. A publish that created no key (it wrote only to the hash and to the history that was
-- there) leaves all of them as they are while the hash's expiration is within a slack of that,
-- instead of 8 calls each time: the job may expire up to min(1 s, 1 % of `ttl`) early.
local refresh = true
if not (has_logs or has_keys or eta_changed or ARGV[18] ~= '' or not job[3]) then
  local left = redis.call('PTTL', KEYS[3])
  refresh = left > ttl or left < ttl - math.min(1000, math.floor(ttl / 100))
end
if refresh then
  for k = 3, 12 do
    if k ~= 7 and k ~= 10 and k ~= 11 then redis.call('PEXPIRE', KEYS[k], ttl) end
  end
  redis.call('ZADD', KEYS[7], now_ms + ttl, ARGV[13])
end

local body = ARGV[10]
if table.concat(added) ~= '' then  -- the batch as [[name, data], ...] with the ETAs added
  local items = {}
  for i = 1, n do
    items[i] = '["' .. ARGV[base + 4 * i - 3] .. '",' .. datas[i] .. ']'
  end
  body = '[' .. table.concat(items, ',') .. ']'
end
redis.call('PUBLISH', ARGV[2], epoch .. ' ' .. first .. ' ' .. body)

-- Webhooks: the events the job's receiver asked for go to the outbox in this same step, each
-- with the snapshot as this publish left it (its hash and log tail); past the outbox's length
-- the oldest deliveries are dropped, and counted.
if ARGV[hooks_at] then
  local url = redis.call('HGET', KEYS[3], 'webhook_url')
  if url or ARGV[hooks_at + 2] == '1' then
    local events = redis.call('HGET', KEYS[3], 'webhook_events') or ''
    if events == '' then events = ARGV[hooks_at + 1] end
    local stage = stage_before and cjson.decode(stage_before)
    local snapshot = nil
    local most = tonumber(ARGV[hooks_at])
    for i = 1, n do
      local name = ARGV[base + 4 * i - 3]
      local take = events == 'all' or name == 'complete' or name == 'failed'
        or name == 'cancelled'
      if name == 'progress' then
        local now_stage = cjson.decode(datas[i]).stage
        if type(now_stage) == 'string' and now_stage ~= stage then
          stage = now_stage
          take = take or events == 'stages'
        end
      end
      if take then
        if not snapshot then
          snapshot = cjson.encode({redis.call('HGETALL', KEYS[3]),
            redis.call('LRANGE', KEYS[5], 0, -1)})
        end
        -- What MAXLEN trims is dropped unless an instance already works on it (pending in the
        -- group "relay", brokers/redis_outbox.py): that one is still delivered.
        if redis.call('XLEN', KEYS[13]) >= most then
          local oldest = redis.call('XRANGE', KEYS[13], '-', '+', 'COUNT', 1)[1][1]
          if #redis.call('XPENDING', KEYS[13], 'relay', oldest, oldest, 1) == 0 then
            redis.call('INCR', KEYS[14])
          end
        end
        redis.call('XADD', KEYS[13], 'MAXLEN', most, '*', 'j', ARGV[13],
          'i', epoch .. '-' .. (first + i - 1), 'e', name, 'd', datas[i], 'u', url or '',
          's', snapshot)
      end
    end
  end
end
local cancel = cancel_requested == 'true'
return {'ok', epoch, first, cancel and 1 or 0, job[9] or '', unpack(added)}
