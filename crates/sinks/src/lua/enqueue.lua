-- Queues one delivery once. KEYS[1] the destination's outbox stream, KEYS[2] its "queued" marker
-- for the delivery's key (same hash tag); ARGV[1] the marker's TTL in seconds, then field/value
-- pairs of the entry. 1 if queued now, 0 if it was queued before (a re-read after a restart).
if not redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[1]) then return 0 end
local fields = {}
for i = 2, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('XADD', KEYS[1], '*', unpack(fields))
return 1
