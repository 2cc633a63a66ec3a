-- Adds one tally to a daily stats hash, atomically with its progress marker.
-- KEYS[1]  the day's hash (rakuda:realtime:stats:<date>; no hash tag, so everything that must
--          change together lives inside it)
-- ARGV[1]  marker field (progress:<channel>)
-- ARGV[2]  first stream id the tally covers, ARGV[3] the last
-- ARGV[4]  EXPIREAT (Unix seconds)
-- ARGV[5]  first event's acceptance ms, ARGV[6] last ('' when the tally has no events)
-- ARGV[7..] field, increment, field, increment, ...
-- Returns {1, last} applied; {0, marker} already applied; {-1, marker} partly applied (the
-- caller sends the tally of the entries after the marker).
local function before(a, b) -- stream id a < b, compared as digit strings (no float rounding)
  local ams, aseq = string.match(a, '^(%d+)-(%d+)$')
  local bms, bseq = string.match(b, '^(%d+)-(%d+)$')
  local function lt(x, y)
    if #x ~= #y then return #x < #y end
    return x < y
  end
  if ams ~= bms then return lt(ams, bms) end
  return lt(aseq, bseq)
end
local marker = redis.call('HGET', KEYS[1], ARGV[1])
if marker and not before(marker, ARGV[2]) then
  if not before(marker, ARGV[3]) then return {0, marker} end
  return {-1, marker}
end
for i = 7, #ARGV, 2 do
  redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i + 1])
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
if ARGV[5] ~= '' then
  local f = redis.call('HGET', KEYS[1], 'first_event_ms')
  if not f or tonumber(ARGV[5]) < tonumber(f) then redis.call('HSET', KEYS[1], 'first_event_ms', ARGV[5]) end
  local l = redis.call('HGET', KEYS[1], 'last_event_ms')
  if not l or tonumber(ARGV[6]) > tonumber(l) then redis.call('HSET', KEYS[1], 'last_event_ms', ARGV[6]) end
end
redis.call('EXPIREAT', KEYS[1], ARGV[4])
return {1, ARGV[3]}
