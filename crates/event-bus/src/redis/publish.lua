-- Store events in one channel's stream and announce them, atomically.
--
-- KEYS[1]    the channel's stream, rakuda:realtime:stream:{<channel>}
-- KEYS[2..]  idempotency keys, rakuda:realtime:dedupe:{<channel>}:<key> (same hash tag)
-- ARGV[1]    the pub/sub channel to announce on, or '' to store without announcing
--            (a plain Node-style PUBLISH that was already announced by its publisher)
-- ARGV[2]    MAXLEN ~ bound, 0 for none
-- ARGV[3]    age bound in milliseconds (XTRIM MINID ~), 0 for none
-- ARGV[4]    idempotency window in seconds
-- ARGV[5..]  pairs: index of the event's idempotency key in KEYS (0 for none), the envelope
--            JSON without "id" (it starts with '{' and has at least one field)
--
-- Returns a flat array: for each event its id and 1 (stored) or 0 (duplicate: the first id).
local stream = KEYS[1]
local announce = ARGV[1]
local maxlen = tonumber(ARGV[2])
local maxage = tonumber(ARGV[3])
local ttl = tonumber(ARGV[4])
local out = {}
for i = 5, #ARGV, 2 do
  local k = tonumber(ARGV[i])
  local body = ARGV[i + 1]
  local first = false
  if k > 0 then
    first = redis.call('GET', KEYS[k])
  end
  if first then
    out[#out + 1] = first
    out[#out + 1] = 0
  else
    local id
    if maxlen > 0 then
      id = redis.call('XADD', stream, 'MAXLEN', '~', ARGV[2], '*', 'e', body)
    else
      id = redis.call('XADD', stream, '*', 'e', body)
    end
    if k > 0 then
      redis.call('SET', KEYS[k], id, 'EX', ttl)
    end
    if announce ~= '' then
      redis.call('PUBLISH', announce, '{"id":"' .. id .. '",' .. string.sub(body, 2))
    end
    out[#out + 1] = id
    out[#out + 1] = 1
  end
end
if maxage > 0 then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('XTRIM', stream, 'MINID', '~', string.format('%d', now - maxage))
end
return out
