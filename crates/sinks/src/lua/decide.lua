-- Records the decision on a held delivery and lets it go. KEYS[1] the route's held set, KEYS[2]
-- its data hash, KEYS[3] the delivery's decided marker, KEYS[4] the route's decisions stream.
-- ARGV[1] the key, ARGV[2] the marker's life (s), ARGV[3] the decisions kept, ARGV[4..] the
-- decision's fields and values. Returns 1 if the delivery was held (decided now), 0 if not.
local held = redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
if held == 0 then return 0 end
redis.call('SET', KEYS[3], '1', 'EX', ARGV[2])
local fields = {}
for i = 4, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[3], '*', unpack(fields))
return 1
