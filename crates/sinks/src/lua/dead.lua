-- Moves an outbox entry to the dead letters. KEYS[1] the outbox, KEYS[2] the dead letters, KEYS[3]
-- the attempts hash (same hash tag); ARGV[1] the entry id, ARGV[2] the delivery key, then
-- field/value pairs of the dead letter.
local fields = {}
for i = 3, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', '100000', '*', unpack(fields))
redis.call('XDEL', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[2])
return 1
