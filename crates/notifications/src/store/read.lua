-- Marks one notification read, or all of them.
-- KEYS: items, unread. ARGV: id, or '' for all.
-- Returns {marked (how many changed), unread count after}, or {-1} for an id this user does
-- not have.
if ARGV[1] == '' then
  local n = redis.call('ZCARD', KEYS[2])
  redis.call('DEL', KEYS[2])
  return {n, 0}
end
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return {-1} end
local n = redis.call('ZREM', KEYS[2], ARGV[1])
return {n, redis.call('ZCARD', KEYS[2])}
