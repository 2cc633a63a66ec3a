-- Stores one notification for one user (all keys share the user's hash tag).
-- KEYS: items (hash id -> JSON), order (zset id -> seq), unread (zset id -> seq), seq (counter),
--       idem (string: the id a retried create with the same idempotency key returns).
-- ARGV: id, json, cap (most notifications kept), ttl (seconds; every key's expiry is pushed
--       back on each create), has_idem ('1'/'0'), idem_ttl (seconds).
-- Returns {new (1/0), json, unread count, read (1/0)}.
if ARGV[5] == '1' then
  local prev = redis.call('GET', KEYS[5])
  if prev then
    local json = redis.call('HGET', KEYS[1], prev)
    if json then
      local read = 1
      if redis.call('ZSCORE', KEYS[3], prev) then read = 0 end
      return {0, json, redis.call('ZCARD', KEYS[3]), read}
    end
  end
end
local seq = redis.call('INCR', KEYS[4])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[2], seq, ARGV[1])
redis.call('ZADD', KEYS[3], seq, ARGV[1])
-- Over the cap: the oldest go, read or not, in slices so `unpack` stays small.
local over = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[3])
while over > 0 do
  local n = math.min(over, 500)
  local old = redis.call('ZRANGE', KEYS[2], 0, n - 1)
  redis.call('ZREMRANGEBYRANK', KEYS[2], 0, n - 1)
  redis.call('HDEL', KEYS[1], unpack(old))
  redis.call('ZREM', KEYS[3], unpack(old))
  over = over - n
end
if ARGV[5] == '1' then
  redis.call('SET', KEYS[5], ARGV[1], 'EX', ARGV[6])
end
for i = 1, 4 do
  redis.call('EXPIRE', KEYS[i], ARGV[4])
end
return {1, ARGV[2], redis.call('ZCARD', KEYS[3]), 0}
