"""The Lua scripts of the Redis lease store (``redis.py``). Each runs atomically on the server.

Conventions: a missing hash field reads as ``false``, which equals no string, so every
compare-and-set fails on an absent (expired) key. Times come from the server (TIME).
"""

# ARGV: owner, token, ttl in ms, floor: the highest epoch the acquirer has seen. The new epoch
# exceeds both the counter and the floor, so it stays strictly increasing when Redis forgot it.
ACQUIRE_LEADER = """
local held = redis.call('HMGET', KEYS[1], 'owner', 'epoch', 'token')
if held[1] then
  if held[1] == ARGV[1] and held[3] == ARGV[2] then return tonumber(held[2]) end
  return false
end
if tonumber(ARGV[4]) > tonumber(redis.call('GET', KEYS[2]) or '0') then redis.call('SET', KEYS[2], ARGV[4]) end
local epoch = redis.call('INCR', KEYS[2])
redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'epoch', epoch, 'token', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return epoch
"""

# ARGV: ttl in ms ('' deletes the key instead), then field, value pairs that must all match.
COMPARE_AND_EXTEND_OR_DELETE = """
for i = 2, #ARGV, 2 do
  if redis.call('HGET', KEYS[1], ARGV[i]) ~= ARGV[i + 1] then return 0 end
end
if ARGV[1] == '' then redis.call('DEL', KEYS[1]) else redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return 1
"""

# ARGV: ttl in ms, owner field, owner, then field, value pairs to store. Takes the key if it is
# absent or already the owner's; stamps it with the server time. Returns {1} or
# {0, stamp seconds, stamp microseconds, now seconds, now microseconds} of the other owner.
TAKE = """
local now = redis.call('TIME')
local held = redis.call('HMGET', KEYS[1], ARGV[2], 'beat_s', 'beat_us')
if held[1] and held[1] ~= ARGV[3] then return {0, held[2], held[3], now[1], now[2]} end
redis.call('HSET', KEYS[1], ARGV[2], ARGV[3], 'beat_s', now[1], 'beat_us', now[2])
for i = 4, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return {1}
"""

LEADER = """
local held = redis.call('HMGET', KEYS[1], 'owner', 'epoch')
if not held[1] then return false end
local now = redis.call('TIME')
return {held[1], held[2], redis.call('PTTL', KEYS[1]), now[1], now[2]}
"""

# ARGV: epoch, owner, token ('' = not compared), then schedule key, instant pairs: all written, or
# none unless the live lease is the writer's: its epoch, and its owner and token when given.
SET_CURSORS = """
local held = redis.call('HMGET', KEYS[1], 'epoch', 'owner', 'token')
if held[1] ~= ARGV[1] then return 0 end
if ARGV[2] ~= '' and held[2] ~= ARGV[2] then return 0 end
if ARGV[3] ~= '' and held[3] ~= ARGV[3] then return 0 end
for i = 4, #ARGV, 2 do redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1]) end
return 1
"""

CLAIM = """
local stored = redis.call('HGET', KEYS[1], 'token')
if stored then return stored end
local now = redis.call('TIME')
redis.call('HSET', KEYS[1], 'supervisor', ARGV[1], 'attempt', ARGV[2], 'token', ARGV[3],
           'claimed_s', now[1], 'claimed_us', now[2])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return ARGV[3]
"""
