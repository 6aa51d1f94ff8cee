-- The deployment's epoch: the one Redis has, or ARGV[1] when it has none (Redis lost its data,
-- or is new), in which case the sequence starts again.
-- KEYS: 1 epoch, 2 seq
local epoch = redis.call('GET', KEYS[1])
if epoch then return epoch end
redis.call('SET', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2])
return ARGV[1]
