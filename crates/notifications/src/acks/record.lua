-- Records one acknowledgement of one subject (an event) by one user, once.
-- KEYS: the subject's hash. ARGV: field (<kind>:<user>), the field it implies ('' for none:
-- an acknowledgement implies seen), the value (JSON), the most fields a subject keeps, the
-- retention in ms.
-- Returns {1, value} if the field is new, {0, the first value} if it was there, {-1} if the
-- subject is full.
local n = redis.call('HLEN', KEYS[1])
if n >= tonumber(ARGV[4]) and redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return {-1} end
local new = redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[3])
if ARGV[2] ~= '' then redis.call('HSETNX', KEYS[1], ARGV[2], ARGV[3]) end
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return {new, redis.call('HGET', KEYS[1], ARGV[1])}
