-- Store events in one channel's stream and announce them, atomically.
--
-- KEYS[1]    the channel's stream, rakuda:realtime:stream:{<channel>}
-- KEYS[2..]  idempotency keys, rakuda:realtime:dedupe:{<channel>}:<key> (same hash tag)
-- ARGV[1]    the shard channel to announce on (SPUBLISH), rakuda:realtime:live:{<channel>},
--            or '' to store without announcing
-- ARGV[2]    the Phase 27 channel to announce on too (classic PUBLISH), or '' (the default)
-- ARGV[3]    MAXLEN ~ bound, 0 for none
-- ARGV[4]    age bound in milliseconds (XTRIM MINID ~), 0 for none
-- ARGV[5]    idempotency window in seconds
-- ARGV[6]    expiry of the stream in milliseconds after this call (PEXPIRE), 0 for none: a
--            partition's stream (one per user) goes with its last event
-- ARGV[7..]  pairs: index of the event's idempotency key in KEYS (0 for none), the envelope
--            JSON without "id" (it starts with '{' and has at least one field)
--
-- Each announcement is the envelope with its id and the id of the channel's entry before it,
-- {"id":"<id>","prev":"<id before>",...}: a subscriber whose position is not `prev` missed
-- something and reads the stream to fill the gap. The shard channel has the stream's hash
-- tag: on a Cluster the master that stores the event announces it to its own subscribers
-- only, where a classic PUBLISH would go to every node.
--
-- The age bound is applied when the call's first event falls in a later second than the
-- stream's last entry: at most about once a second per stream, since `MINID ~` only ever
-- drops whole nodes. The time is the new id's (the Redis clock), so there is no TIME call.
--
-- Returns a flat array: for each event its id and 1 (stored) or 0 (duplicate: the first id).
local stream = KEYS[1]
local announce = ARGV[1]
local plain = ARGV[2]
local maxlen = ARGV[3]
local maxage = tonumber(ARGV[4])
local out = {}
local last = redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1)
local prev = last[1] and last[1][1] or '0-0'
local first_prev = prev
local newest = nil
for i = 7, #ARGV, 2 do
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
    if maxlen ~= '0' then
      id = redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', 'e', body)
    else
      id = redis.call('XADD', stream, '*', 'e', body)
    end
    if k > 0 then
      redis.call('SET', KEYS[k], id, 'EX', ARGV[5])
    end
    if announce ~= '' then
      local envelope = '{"id":"' .. id .. '","prev":"' .. prev .. '",' .. string.sub(body, 2)
      redis.call('SPUBLISH', announce, envelope)
      if plain ~= '' then
        redis.call('PUBLISH', plain, envelope)
      end
    end
    prev = id
    newest = newest or id
    out[#out + 1] = id
    out[#out + 1] = 1
  end
end
if maxage > 0 and newest then
  local now = tonumber(string.match(newest, '^(%d+)'))
  local before = tonumber(string.match(first_prev, '^(%d+)'))
  if math.floor(now / 1000) ~= math.floor(before / 1000) then
    redis.call('XTRIM', stream, 'MINID', '~', string.format('%d', now - maxage))
  end
end
if ARGV[6] ~= '0' and newest then
  redis.call('PEXPIRE', stream, ARGV[6])
end
return out
