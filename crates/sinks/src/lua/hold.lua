-- Holds deliveries for escalation, once each. KEYS[1] the route's held set (by due time),
-- KEYS[2] its data hash, KEYS[3..] each delivery's decided marker. ARGV: for each delivery,
-- its key, due time (Unix ms) and data (JSON). A delivery held before, or decided before (a
-- re-read after a restart), is left as it is. Returns 1 or 0 per delivery: held now.
local out = {}
for i = 3, #KEYS do
  local a = (i - 3) * 3
  local key, due, data = ARGV[a + 1], ARGV[a + 2], ARGV[a + 3]
  if redis.call('EXISTS', KEYS[i]) == 1 or redis.call('HSETNX', KEYS[2], key, data) == 0 then
    out[#out + 1] = 0
  else
    redis.call('ZADD', KEYS[1], due, key)
    out[#out + 1] = 1
  end
end
return out
