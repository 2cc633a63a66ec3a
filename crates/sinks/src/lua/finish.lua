-- A delivery was taken, fenced by its destination's lease. KEYS[1] the outbox, KEYS[2] the
-- attempts hash, KEYS[3] the status hash, KEYS[4] the destination's lease (same hash tag);
-- ARGV[1] the holder's token, ARGV[2] the entry id, ARGV[3] the delivery key, ARGV[4] now (ms).
-- 1 if done; 0 if the lease is no longer the holder's (nothing is changed: the holder now
-- decides).
if redis.call('GET', KEYS[4]) ~= ARGV[1] then return 0 end
redis.call('XDEL', KEYS[1], ARGV[2])
redis.call('HDEL', KEYS[2], ARGV[3])
redis.call('HSET', KEYS[3], 'accepted_at', ARGV[4])
return 1
