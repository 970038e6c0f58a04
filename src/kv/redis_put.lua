-- The kv write on Redis (src/kv/redis.rs): check the expected revision, bump the counter,
-- write the entry `revision:value` with its TTL, log the change. KEYS: entry, counter, log.
-- ARGV: value, ttl ms (0: none), expect (any | absent | revision), key, log length.
local expect = ARGV[3]
if expect ~= 'any' then
  local cur = redis.call('GET', KEYS[1])
  if expect == 'absent' then
    if cur then return -1 end
  elseif (not cur) or string.match(cur, '^%d+') ~= expect then return -1 end
end
local rev = redis.call('INCR', KEYS[2])
local entry = string.format('%d:', rev) .. ARGV[1]
local ttl = tonumber(ARGV[2])
if ttl > 0 then
  redis.call('SET', KEYS[1], entry, 'PX', ttl)
else
  redis.call('SET', KEYS[1], entry)
end
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[5], '*', 'op', 'put', 'k', ARGV[4], 'v', ARGV[1], 'r', rev)
return rev
