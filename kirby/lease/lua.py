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

# -- run claims, named leases, registry (issue 11) ------------------------------------------------
# Times are the server's (TIME); index scores are expiry (or claim) instants in milliseconds.

# KEYS: claim, active index, generation. ARGV: supervisor, attempt, token, instance, offer, run id,
# generation marker ('' = not checked). Returns false when that generation is not the open one, else the token of the claim that holds (ours when we won; a retry finds its own token).
CLAIM = """
local held = redis.call('HMGET', KEYS[1], 'token', 'released')
if held[1] and held[2] ~= '1' then return held[1] end
if ARGV[7] and ARGV[7] ~= '' then
  local g = redis.call('HMGET', KEYS[3], 'marker', 'open')
  if g[1] ~= ARGV[7] or g[2] ~= '1' then return false end
end
local now = redis.call('TIME')
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'supervisor', ARGV[1], 'attempt', ARGV[2], 'token', ARGV[3], 'instance', ARGV[4],
           'offer', ARGV[5], 'claimed_s', now[1], 'claimed_us', now[2])
redis.call('ZADD', KEYS[2], now[1] * 1000 + math.floor(now[2] / 1000), ARGV[6])
return ARGV[3]
"""

# KEYS: claim. ARGV: instance. 1 when the claim is the instance's, open to start (or started by it).
MARK_STARTED = """
local held = redis.call('HMGET', KEYS[1], 'instance', 'released', 'settled', 'started_s')
if held[1] ~= ARGV[1] or held[2] == '1' or held[3] == '1' then return 0 end
if not held[4] then
  local now = redis.call('TIME')
  redis.call('HSET', KEYS[1], 'started_s', now[1], 'started_us', now[2])
end
return 1
"""

# KEYS: claim. ARGV: instance. Opens a never-started, unsettled claim of that (dead) instance.
RELEASE_CLAIM = """
local held = redis.call('HMGET', KEYS[1], 'instance', 'released', 'settled', 'started_s')
if held[1] ~= ARGV[1] or held[2] == '1' or held[3] == '1' or held[4] then return 0 end
redis.call('HSET', KEYS[1], 'released', '1')
return 1
"""

# KEYS: claim, active index. ARGV: run id, retention in ms.
SETTLE = """
redis.call('ZREM', KEYS[2], ARGV[1])
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HSET', KEYS[1], 'settled', '1')
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 1
"""

# KEYS: lease, its space's index, generations, the store's generation marker. ARGV: owner, ttl in ms,
# name, replaced owner or '', generation marker ('' = not checked). Returns false when another owner
# holds it, -1 when a new owner would take it while that marker is not the open one (amnesia), else
# its generation. A lease counter missing from a store that lost its data (its generation closed,
# or rebuilt) restarts from the server time in ms, so fence tokens issued after amnesia exceed those
# issued before (a holder writing back its lease while closed passes no marker).
ACQUIRE_LEASE = """
local now = redis.call('TIME')
local ms = now[1] * 1000 + math.floor(now[2] / 1000)
local owner = redis.call('HGET', KEYS[1], 'owner')
local generation
if owner == ARGV[1] then
  generation = redis.call('HGET', KEYS[1], 'generation')
elseif (not owner) or (ARGV[4] ~= '' and owner == ARGV[4]) then
  local g = redis.call('HMGET', KEYS[4], 'marker', 'open', 'rebuilt')
  if ARGV[5] and ARGV[5] ~= '' and (g[1] ~= ARGV[5] or g[2] ~= '1') then return -1 end
  local lost = g[1] and (g[3] == '1' or g[2] ~= '1')
  if lost and redis.call('HEXISTS', KEYS[3], ARGV[3]) == 0 then redis.call('HSET', KEYS[3], ARGV[3], ms) end
  generation = redis.call('HINCRBY', KEYS[3], ARGV[3], 1)
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[1], 'owner', ARGV[1], 'generation', generation)
else
  return false
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ms)
redis.call('ZADD', KEYS[2], ms + tonumber(ARGV[2]), ARGV[3])
return tonumber(generation)
"""

# KEYS: lease, index. ARGV: owner, ttl in ms ('' releases), name.
RENEW_OR_RELEASE_LEASE = """
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
if ARGV[2] == '' then
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[2], ARGV[3])
  return 1
end
local now = redis.call('TIME')
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('ZADD', KEYS[2], now[1] * 1000 + math.floor(now[2] / 1000) + tonumber(ARGV[2]), ARGV[3])
return 1
"""

# KEYS: an index. Drops the expired members; returns the live ones and the server time.
LIVE = """
local now = redis.call('TIME')
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now[1] * 1000 + math.floor(now[2] / 1000))
return {redis.call('ZRANGE', KEYS[1], 0, -1), now[1], now[2]}
"""

# KEYS: registration, index. ARGV: ttl in ms, instance, info, name, replaced instance or ''.
# Returns {1}, or {0, instance, info, beat seconds, beat microseconds} of the live holder.
REGISTER = """
local held = redis.call('HMGET', KEYS[1], 'instance', 'info', 'beat_s', 'beat_us')
if held[1] and held[1] ~= ARGV[2] and not (ARGV[5] ~= '' and held[1] == ARGV[5]) then
  return {0, held[1], held[2], held[3], held[4]}
end
local now = redis.call('TIME')
redis.call('HSET', KEYS[1], 'instance', ARGV[2], 'info', ARGV[3], 'beat_s', now[1], 'beat_us', now[2])
redis.call('PEXPIRE', KEYS[1], ARGV[1])
redis.call('ZADD', KEYS[2], now[1] * 1000 + math.floor(now[2] / 1000) + tonumber(ARGV[1]), ARGV[4])
return {1}
"""

# KEYS: registration, index. ARGV: instance, name.
UNREGISTER = """
if redis.call('HGET', KEYS[1], 'instance') ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[2])
return 1
"""

# -- generation marker: amnesia detection (issue 10) -----------------------------------------------
# KEYS: generation. ARGV: the marker the caller knows ('' = none), a new marker, the server's boot id.
# Returns {marker, open, boot, closed at (ms, '' when open), rebuilt}.
CHECK_GENERATION = """
local g = redis.call('HMGET', KEYS[1], 'marker', 'open', 'boot', 'closed_ms', 'rebuilt')
local now = redis.call('TIME')
local ms = tostring(now[1] * 1000 + math.floor(now[2] / 1000))
if not g[1] then
  local open, closed = '1', ''
  if ARGV[1] ~= '' then open, closed = '0', ms end
  redis.call('HSET', KEYS[1], 'marker', ARGV[2], 'open', open, 'boot', ARGV[3], 'closed_ms', closed, 'rebuilt', '0')
  return {ARGV[2], open, ARGV[3], closed, '0'}
end
local close = g[3] ~= ARGV[3] or (ARGV[1] ~= '' and g[1] ~= ARGV[1] and g[5] ~= '1')
if close and g[2] == '1' then
  redis.call('HSET', KEYS[1], 'open', '0', 'closed_ms', ms, 'rebuilt', '0')
  g[2], g[4], g[5] = '0', ms, '0'
end
redis.call('HSET', KEYS[1], 'boot', ARGV[3])
return {g[1], g[2], ARGV[3], g[4] or '', g[5] or '0'}
"""

# KEYS: generation, leader. ARGV: marker, epoch, owner, token ('' = not compared).
OPEN_GENERATION = """
local held = redis.call('HMGET', KEYS[2], 'epoch', 'owner', 'token')
if held[1] ~= ARGV[2] or held[2] ~= ARGV[3] then return 0 end
if ARGV[4] ~= '' and held[3] ~= ARGV[4] then return 0 end
if redis.call('HGET', KEYS[1], 'marker') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'open', '1', 'closed_ms', '', 'rebuilt', '1')
return 1
"""

# KEYS: active claims index, then one claim key per claim. ARGV: retention in ms, then per claim
# run id, supervisor, instance, attempt, offer, started ('1'), settled ('1'). Writes missing claims
# only; returns the run ids held by another instance.
RESTORE_CLAIMS = """
local now = redis.call('TIME')
local conflicts = {}
for i = 2, #KEYS do
  local a = 2 + (i - 2) * 7
  local held = redis.call('HGET', KEYS[i], 'instance')
  if held then
    if held ~= ARGV[a + 2] then table.insert(conflicts, ARGV[a]) end
  else
    redis.call('HSET', KEYS[i], 'supervisor', ARGV[a + 1], 'instance', ARGV[a + 2], 'attempt', ARGV[a + 3],
               'offer', ARGV[a + 4], 'token', 'restored', 'restored', '1', 'claimed_s', now[1], 'claimed_us', now[2])
    if ARGV[a + 5] == '1' then redis.call('HSET', KEYS[i], 'started_s', now[1], 'started_us', now[2]) end
    if ARGV[a + 6] == '1' then
      redis.call('HSET', KEYS[i], 'settled', '1')
      redis.call('PEXPIRE', KEYS[i], ARGV[1])
    else
      redis.call('ZADD', KEYS[1], now[1] * 1000 + math.floor(now[2] / 1000), ARGV[a])
    end
  end
end
return conflicts
"""

# KEYS: the delivery key. ARGV: the claimant, ttl in ms. Returns false when taken now, else the holder.
CLAIM_DELIVERY = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return false end
return redis.call('GET', KEYS[1]) or ''
"""
