-- One page of a user's notifications, newest first.
-- KEYS: items, order, unread. ARGV: unread_only ('1'/'0'), limit, before (an id, or '').
-- Returns {unread count, total, json1, read1, json2, read2, ...}, or {-1} if `before` is not
-- one of this user's notifications.
local src = KEYS[2]
if ARGV[1] == '1' then src = KEYS[3] end
local max = '+inf'
if ARGV[3] ~= '' then
  local s = redis.call('ZSCORE', KEYS[2], ARGV[3])
  if not s then return {-1} end
  max = '(' .. s
end
local ids = redis.call('ZREVRANGEBYSCORE', src, max, '-inf', 'LIMIT', 0, tonumber(ARGV[2]))
local out = {redis.call('ZCARD', KEYS[3]), redis.call('ZCARD', KEYS[2])}
for _, id in ipairs(ids) do
  local json = redis.call('HGET', KEYS[1], id)
  if json then
    out[#out + 1] = json
    if redis.call('ZSCORE', KEYS[3], id) then out[#out + 1] = '0' else out[#out + 1] = '1' end
  end
end
return out
