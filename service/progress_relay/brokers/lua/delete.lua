-- Drop a job: its keys and its place in both job indexes. Only deletions: Redis runs it even
-- when it is past its maxmemory, where it refuses a MULTI (deleting is what frees memory).
-- KEYS: the job's keys, then the jobs by expiry and the jobs by creation; ARGV: 1 the job id
for i = 1, #KEYS - 2 do
  redis.call('DEL', KEYS[i])
end
redis.call('ZREM', KEYS[#KEYS - 1], ARGV[1])
redis.call('ZREM', KEYS[#KEYS], ARGV[1])
return 1
