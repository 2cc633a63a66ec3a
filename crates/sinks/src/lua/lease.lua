-- Takes or renews a lease. KEYS[1] the lease; ARGV[1] holder, ARGV[2] ttl ms. 1 if held.
local v = redis.call('GET', KEYS[1])
if v == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end
if not v then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1 end
return 0
