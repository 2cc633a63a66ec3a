-- One gateway's roster of one channel. KEYS[1] the gateway's roster key, KEYS[2] the channel's
-- set of gateways. ARGV[1] the gateway, ARGV[2] its roster (JSON; '' when no one is connected
-- there any more), ARGV[3] how long it lives (ms). Each gateway refreshes its rosters every
-- interval, so a dead gateway's expire.
if ARGV[2] == '' then
  redis.call('DEL', KEYS[1])
  redis.call('SREM', KEYS[2], ARGV[1])
  return 0
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return 1
