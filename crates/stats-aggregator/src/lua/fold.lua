-- Folds the gateways' cumulative counters into a daily stats hash as deltas, atomically with
-- the baselines the deltas are taken from (fields gwbase:<instance>:...).
-- KEYS[1]  the day's hash
-- ARGV[1]  EXPIREAT (Unix seconds), ARGV[2] now (ms), ARGV[3] open connections, all gateways
-- ARGV[4..] per gateway: instance, started_at, n, then n triples (field, value, fallback):
--          fallback is the baseline to use when the hash has none for this started_at.
-- A value below its baseline with the same started_at is a stale reading: nothing is added.
local h = KEYS[1]
local i = 4
while i <= #ARGV do
  local inst, started, n = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  local prefix = 'gwbase:' .. inst .. ':'
  local same = redis.call('HGET', h, prefix .. 'started_at') == started
  i = i + 3
  for _ = 1, n do
    local field, value, fallback = ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2])
    local base = math.min(fallback, value)
    if same then base = tonumber(redis.call('HGET', h, prefix .. field) or '0') end
    if value >= base then
      if value > base then redis.call('HINCRBY', h, 'gw:' .. field, value - base) end
      redis.call('HSET', h, prefix .. field, ARGV[i + 1])
    end
    i = i + 3
  end
  redis.call('HSET', h, prefix .. 'started_at', started)
end
local peak = tonumber(redis.call('HGET', h, 'gw:connections_peak') or '-1')
if tonumber(ARGV[3]) > peak then
  redis.call('HSET', h, 'gw:connections_peak', ARGV[3], 'gw:connections_peak_ms', ARGV[2])
end
redis.call('EXPIREAT', h, ARGV[1])
return 1
