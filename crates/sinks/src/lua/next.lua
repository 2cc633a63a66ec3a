-- What a deliverer does before each delivery, in one call. KEYS[1] the outbox, KEYS[2] the
-- disabled flag, KEYS[3] the backoff, KEYS[4] the token bucket (hash: tokens, at), KEYS[5] the
-- attempts; ARGV[1] rate per second, ARGV[2] burst, ARGV[3] now in ms.
-- Returns {backlog, disabled or false, backoff until or false, wait ms, entry id, fields,
-- attempts}: the oldest entry only when the destination is enabled, not backing off and had a
-- token (then its attempt is counted); a wait > 0 when the bucket is empty.
local rate, burst, now = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local backlog = redis.call('XLEN', KEYS[1])
local disabled = redis.call('GET', KEYS[2])
if disabled then return {backlog, disabled, false, 0} end
local backoff = tonumber(redis.call('GET', KEYS[3]) or '0')
if backoff > now then return {backlog, false, tostring(backoff), 0} end
local first = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
if #first == 0 then return {backlog, false, false, 0} end
local b = redis.call('HMGET', KEYS[4], 'tokens', 'at')
local tokens, at = tonumber(b[1]) or burst, tonumber(b[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate / 1000)
local wait = 0
if tokens >= 1 then tokens = tokens - 1 else wait = math.ceil((1 - tokens) * 1000 / rate) end
redis.call('HSET', KEYS[4], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[4], math.ceil(burst * 1000 / rate) + 60000)
if wait > 0 then return {backlog, false, false, wait} end
local id, fields = first[1][1], first[1][2]
local key = ''
for i = 1, #fields, 2 do if fields[i] == 'key' then key = fields[i + 1] end end
local attempts = redis.call('HINCRBY', KEYS[5], key, 1)
return {backlog, false, false, 0, id, fields, attempts}
