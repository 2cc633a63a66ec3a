-- Store one event only if an entity's state is as expected; move the state with it.
--
-- KEYS[1]  the channel's stream, rakuda:realtime:stream:{<channel>}
-- KEYS[2]  the entity state, rakuda:realtime:state:{<channel>}:<entity>
-- KEYS[3]  the idempotency key, rakuda:realtime:dedupe:{<channel>}:<key>, or the state key
--          again when there is none (ARGV[10] = '0')
-- ARGV[1]  the shard channel to announce on ({"id","prev",...} by SPUBLISH, as in publish.lua)
-- ARGV[2]  MAXLEN ~ bound (0: none), ARGV[3] age bound in ms (0: none)
-- ARGV[4]  idempotency window in seconds
-- ARGV[5]  '1' when a state is expected (then ARGV[6] is it), '0' when none is
-- ARGV[7]  the new state, ARGV[8] its time to live in seconds (0: none)
-- ARGV[9]  the envelope JSON without "id", or '' to change the state without an event
-- ARGV[10] '1' when KEYS[3] is an idempotency key
-- ARGV[11] the Phase 27 channel to announce on too (classic PUBLISH), or ''
--
-- Returns {id, 1} stored; {first id, 0} duplicate; {'', -1, current, exists} conflict;
-- {'', 2} state changed without an event.
local has_key = ARGV[10] == '1'
if has_key then
  local first = redis.call('GET', KEYS[3])
  if first then return {first, 0} end
end
local cur = redis.call('GET', KEYS[2])
if ARGV[5] == '1' then
  if cur ~= ARGV[6] then return {'', -1, cur or '', cur and 1 or 0} end
elseif cur then
  return {'', -1, cur, 1}
end
if tonumber(ARGV[8]) > 0 then
  redis.call('SET', KEYS[2], ARGV[7], 'EX', ARGV[8])
else
  redis.call('SET', KEYS[2], ARGV[7])
end
local body = ARGV[9]
if body == '' then return {'', 2} end
local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local prev = last[1] and last[1][1] or '0-0'
local id
if tonumber(ARGV[2]) > 0 then
  id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'e', body)
else
  id = redis.call('XADD', KEYS[1], '*', 'e', body)
end
if has_key then redis.call('SET', KEYS[3], id, 'EX', ARGV[4]) end
local envelope = '{"id":"' .. id .. '","prev":"' .. prev .. '",' .. string.sub(body, 2)
redis.call('SPUBLISH', ARGV[1], envelope)
if ARGV[11] ~= '' then redis.call('PUBLISH', ARGV[11], envelope) end
-- The age bound as in publish.lua: when the event starts a new second of the stream.
local maxage = tonumber(ARGV[3])
if maxage > 0 then
  local now = tonumber(string.match(id, '^(%d+)'))
  if math.floor(now / 1000) ~= math.floor(tonumber(string.match(prev, '^(%d+)')) / 1000) then
    redis.call('XTRIM', KEYS[1], 'MINID', '~', string.format('%d', now - maxage))
  end
end
return {id, 1}
