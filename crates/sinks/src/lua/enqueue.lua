-- Queues one delivery once, then keeps the outbox within its bound. KEYS[1] the destination's
-- outbox stream, KEYS[2] its "queued" marker for the delivery's key, KEYS[3] its dead letters,
-- KEYS[4] its attempts hash (same hash tag); ARGV[1] the marker's TTL in seconds, ARGV[2] the
-- most deliveries that may wait, ARGV[3] how long one may wait in ms, then field/value pairs of
-- the entry. {1, dead} if queued now, {0, 0} if it was queued before (a re-read after a
-- restart); dead is how many of the oldest deliveries went to the dead letters because the
-- outbox was full or they were too old (a disabled destination's outbox grows no further).
if not redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[1]) then return {0, 0} end
local fields = {}
for i = 4, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('XADD', KEYS[1], '*', unpack(fields))
local max_backlog, max_age_ms = tonumber(ARGV[2]), tonumber(ARGV[3])
local t = redis.call('TIME')
local oldest_allowed = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - max_age_ms
local dead = 0
-- At most 100 a call: one queueing adds one entry, so a bound lowered by a restart is reached
-- over a few calls instead of in one long one.
while dead < 100 do
  local oldest = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)[1]
  if not oldest then break end
  local why
  if redis.call('XLEN', KEYS[1]) > max_backlog then
    why = 'the outbox was full (delivery.max_backlog)'
  elseif tonumber(string.match(oldest[1], '^(%d+)')) < oldest_allowed then
    why = 'older than delivery.max_age_secs'
  else
    break
  end
  local letter = oldest[2]
  for i = 1, #letter, 2 do
    if letter[i] == 'key' then redis.call('HDEL', KEYS[4], letter[i + 1]) end
  end
  letter[#letter + 1] = 'why'
  letter[#letter + 1] = why
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', '100000', '*', unpack(letter))
  redis.call('XDEL', KEYS[1], oldest[1])
  dead = dead + 1
end
return {1, dead}
