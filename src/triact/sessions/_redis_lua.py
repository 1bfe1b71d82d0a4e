"""The Redis Functions library behind RedisStore: each change to a session is one call
of one of these functions, which Redis runs atomically (no other command runs
between its reads and its writes), so the compare-and-set on the version, the
fencing epoch check, the idle deadline and the event all happen at once or not at
all.

Keys, under the store's prefix ``P``:

- ``P{<id>}``: a hash per session: ``v`` version, ``s`` the state's JSON, ``c``
  created_at and ``u`` last_used (the state's wall clock), ``cl`` client id, ``e``
  fencing epoch, ``own`` lease holder, ``lx`` lease end and ``dl`` deadline (seconds
  on the Redis server's clock). Redis expires the hash itself a while after ``dl``
  (``PEXPIREAT``, sent by the caller), so that nothing stays when no process sweeps.
- ``Pdeadlines``: sorted set, id -> deadline (what is due, for the sweep).
- ``Porder``: sorted set, id -> created_at (count and listing in creation order).
- ``Pclient:<client id>``: set of the client's session ids (per-client caps).
- ``Pprincipal:<principal>``: set of the principal's session ids (per-principal
  caps); the session's hash keeps its principal as ``pr``.
- ``Prec:<len>:<namespace>:<key>``: a record: hash of ``v`` value and ``t`` its ttl
  in ms, with a Redis expiry of that ttl, restarted by every read.
- Channel ``Pevents``: ``"<kind> <id> <version>"`` for every change, published by
  the function that made it (so in commit order).

Times in the arguments are decimal seconds on the Redis server's clock; the caller
maps its own clock onto it.
"""

from __future__ import annotations

#: The library's name, which versions it: a triact whose functions change bumps it,
#: so that processes of two versions can share one Redis during an upgrade.
LIBRARY = "triact_4"

SOURCE = """#!lua name=triact_4

local function skey(p, sid) return p .. '{' .. sid .. '}' end

local function publish(p, kind, sid, v)
  redis.call('PUBLISH', p .. 'events', kind .. ' ' .. sid .. ' ' .. v)
end

local function drop(p, sid, h, cl)
  local pr = redis.call('HGET', h, 'pr')
  redis.call('DEL', h)
  redis.call('ZREM', p .. 'deadlines', sid)
  redis.call('ZREM', p .. 'order', sid)
  if cl then redis.call('SREM', p .. 'client:' .. cl, sid) end
  if pr then redis.call('SREM', p .. 'principal:' .. pr, sid) end
end

-- How many of the set's sessions still exist (those Redis expired itself leave it).
local function live_members(p, set)
  local held = 0
  for _, other in ipairs(redis.call('SMEMBERS', set)) do
    if redis.call('EXISTS', skey(p, other)) == 1 then
      held = held + 1
    else
      redis.call('SREM', set, other)
    end
  end
  return held
end

local function due(dl, lx, now)
  return tonumber(dl) <= now and tonumber(lx or '0') <= now
end

-- Expire those of ids that are due (deadline passed, no live lease); forget the
-- index entries of hashes Redis expired itself. Appends id, version pairs to out.
local function expire_ids(p, ids, now, out)
  for _, sid in ipairs(ids) do
    local h = skey(p, sid)
    local r = redis.call('HMGET', h, 'v', 'dl', 'lx', 'cl')
    if not r[1] then
      redis.call('ZREM', p .. 'deadlines', sid)
      redis.call('ZREM', p .. 'order', sid)
    elseif due(r[2], r[3], now) then
      drop(p, sid, h, r[4])
      publish(p, 'expired', sid, r[1])
      table.insert(out, sid)
      table.insert(out, r[1])
    end
  end
  return out
end

local function set_deadline(p, sid, h, dl, pexp)
  redis.call('HSET', h, 'dl', dl)
  redis.call('ZADD', p .. 'deadlines', dl, sid)
  if pexp ~= '' then redis.call('PEXPIREAT', h, pexp) end
end

-- KEYS: session. ARGV: p sid version state created used client dl pexp node lx now
-- max cap principal principal_cap.
-- -> {'OK', trimmed} | {'LIMIT', 'sessions'|'client'|'principal', trimmed} | {'EXISTS', v}
local function create(keys, args)
  local h, p, sid = keys[1], args[1], args[2]
  local now = tonumber(args[12])
  local ids = redis.call('ZRANGEBYSCORE', p .. 'deadlines', '-inf', now, 'LIMIT', 0, 1000)
  local trimmed = expire_ids(p, ids, now, {})
  if redis.call('ZCARD', p .. 'order') >= tonumber(args[13]) then
    return {'LIMIT', 'sessions', trimmed}
  end
  local cl, pr = args[7], args[15]
  if cl ~= '' and args[14] ~= '' then
    if live_members(p, p .. 'client:' .. cl) >= tonumber(args[14]) then
      return {'LIMIT', 'client', trimmed}
    end
  end
  if pr ~= '' and args[16] ~= '' then
    if live_members(p, p .. 'principal:' .. pr) >= tonumber(args[16]) then
      return {'LIMIT', 'principal', trimmed}
    end
  end
  if redis.call('EXISTS', h) == 1 then return {'EXISTS', redis.call('HGET', h, 'v')} end
  redis.call('HSET', h, 'v', args[3], 's', args[4], 'c', args[5], 'u', args[6],
             'e', 1, 'own', args[10], 'lx', args[11])
  if cl ~= '' then
    redis.call('HSET', h, 'cl', cl)
    redis.call('SADD', p .. 'client:' .. cl, sid)
  end
  if pr ~= '' then
    redis.call('HSET', h, 'pr', pr)
    redis.call('SADD', p .. 'principal:' .. pr, sid)
  end
  set_deadline(p, sid, h, args[8], args[9])
  redis.call('ZADD', p .. 'order', args[5], sid)
  publish(p, 'created', sid, args[3])
  return {'OK', trimmed}
end

-- KEYS: session. ARGV: p sid node lx now force.
-- -> {'OK', state, v, epoch, lx} | {'HELD', state, v, holder, lx} | {'GONE'}
local function activate(keys, args)
  local h, p, sid = keys[1], args[1], args[2]
  local r = redis.call('HMGET', h, 's', 'v', 'own', 'lx', 'dl', 'cl')
  if not r[1] then return {'GONE'} end
  local now = tonumber(args[5])
  if due(r[5], r[4], now) then
    drop(p, sid, h, r[6])
    publish(p, 'expired', sid, r[2])
    return {'GONE'}
  end
  if r[3] and r[3] ~= args[3] and tonumber(r[4]) > now and args[6] ~= '1' then
    return {'HELD', r[1], r[2], r[3], r[4]}
  end
  local e = redis.call('HINCRBY', h, 'e', 1)
  redis.call('HSET', h, 'own', args[3], 'lx', args[4])
  return {'OK', r[1], r[2], e, args[4]}
end

-- KEYS: session. ARGV: p sid expected new_version epoch|'' state used dl|'' pexp.
-- -> {'OK'} | {'CONFLICT', v} | {'FENCED', e} | {'GONE'}
local function write(keys, args)
  local h, p, sid = keys[1], args[1], args[2]
  local r = redis.call('HMGET', h, 'v', 'e')
  if not r[1] then return {'GONE'} end
  if r[1] ~= args[3] then return {'CONFLICT', r[1]} end
  if args[5] ~= '' and r[2] ~= args[5] then return {'FENCED', r[2]} end
  redis.call('HSET', h, 'v', args[4], 's', args[6], 'u', args[7])
  if args[8] ~= '' then set_deadline(p, sid, h, args[8], args[9]) end
  publish(p, 'updated', sid, args[4])
  return {'OK'}
end

-- KEYS: session. ARGV: p sid node epoch lx busy_dl|'' pexp. -> 1 kept, 0 lost.
local function renew(keys, args)
  local h, p, sid = keys[1], args[1], args[2]
  local r = redis.call('HMGET', h, 'own', 'e', 'dl')
  if r[1] ~= args[3] or r[2] ~= args[4] then return 0 end
  redis.call('HSET', h, 'lx', args[5])
  if args[6] ~= '' and tonumber(args[6]) > tonumber(r[3]) then
    set_deadline(p, sid, h, args[6], args[7])
  end
  return 1
end

local function push_deadline(h, p, sid, dl, pexp)
  local current = redis.call('HGET', h, 'dl')
  if current and tonumber(dl) > tonumber(current) then set_deadline(p, sid, h, dl, pexp) end
end

-- KEYS: session. ARGV: p sid dl pexp. Pushes the deadline to at least dl.
local function touch(keys, args)
  push_deadline(keys[1], args[1], args[2], args[3], args[4])
  return 1
end

-- KEYS: session. ARGV: p sid dl pexp node epoch. A touch, then the lease is let go.
local function release(keys, args)
  local h = keys[1]
  push_deadline(h, args[1], args[2], args[3], args[4])
  local r = redis.call('HMGET', h, 'own', 'e')
  if r[1] == args[5] and r[2] == args[6] then
    redis.call('HDEL', h, 'own')
    redis.call('HSET', h, 'lx', 0)
  end
  return 1
end

-- KEYS: session. ARGV: p sid expected|''. -> {'OK', v} | {'CONFLICT', v} | {'GONE'}
local function remove(keys, args)
  local h, p, sid = keys[1], args[1], args[2]
  local r = redis.call('HMGET', h, 'v', 'cl')
  if not r[1] then return {'GONE'} end
  if args[3] ~= '' and r[1] ~= args[3] then return {'CONFLICT', r[1]} end
  drop(p, sid, h, r[2])
  publish(p, 'removed', sid, r[1])
  return {'OK', r[1]}
end

-- KEYS: deadlines. ARGV: p now id... -> {id, v, ...} of those expired.
local function expire(keys, args)
  local ids = {}
  for i = 3, #args do ids[#ids + 1] = args[i] end
  return expire_ids(args[1], ids, tonumber(args[2]), {})
end

-- What a listing tells of a session from its state: topic, token HMAC ('' unbound)
-- and principal; all nil (the caller then loads it) if the state does not decode.
local function described(text)
  local ok, record = pcall(cjson.decode, text)
  if not ok or type(record) ~= 'table' or type(record.state) ~= 'table' then
    return false, false, false
  end
  local st = record.state
  local function plain(v) if type(v) == 'string' then return v end return false end
  local hmac = ''
  if type(st.client_binding) == 'table' then hmac = plain(st.client_binding.token_hmac) end
  return plain(st.topic), hmac, plain(st.principal)
end

-- KEYS: order. ARGV: p after_created|'' after_id limit.
-- -> {{id, created, used, client|nil, v, topic|nil, token_hmac|nil, principal|nil},
--     ...} in (created, id) order.
local function page(keys, args)
  local p, after_id, limit = args[1], args[3], tonumber(args[4])
  local after = tonumber(args[2])
  local low = '-inf'
  if after then low = args[2] end
  local out, offset = {}, 0
  while #out < limit do
    local batch = redis.call('ZRANGEBYSCORE', keys[1], low, '+inf', 'WITHSCORES',
                             'LIMIT', offset, limit)
    if #batch == 0 then break end
    for i = 1, #batch, 2 do
      local sid, score = batch[i], tonumber(batch[i + 1])
      if #out < limit and (after == nil or score > after or sid > after_id) then
        local r = redis.call('HMGET', skey(p, sid), 'c', 'u', 'cl', 'v', 's')
        if r[1] then
          local topic, hmac, principal = described(r[5])
          out[#out + 1] = {sid, r[1], r[2], r[3], r[4], topic, hmac, principal}
        end
      end
    end
    offset = offset + #batch / 2
  end
  return out
end

-- KEYS: record. ARGV: value ttl_ms.
local function record_put(keys, args)
  redis.call('HSET', keys[1], 'v', args[1], 't', args[2])
  redis.call('PEXPIRE', keys[1], args[2])
  return 1
end

-- KEYS: record. ARGV: value ttl_ms compare expected. Puts it if the record holds
-- expected (compare '1'), or if there is none (compare '0'): 1; else 0.
local function record_swap(keys, args)
  local held = redis.call('HGET', keys[1], 'v')
  if args[3] == '1' then
    if held ~= args[4] then return 0 end
  elseif held then
    return 0
  end
  return record_put(keys, args)
end

-- KEYS: record. -> its value (its ttl starts again), or nil.
local function record_get(keys, args)
  local r = redis.call('HMGET', keys[1], 'v', 't')
  if not r[1] then return false end
  redis.call('PEXPIRE', keys[1], r[2])
  return r[1]
end

redis.register_function('triact_4_create', create)
redis.register_function('triact_4_activate', activate)
redis.register_function('triact_4_write', write)
redis.register_function('triact_4_renew', renew)
redis.register_function('triact_4_touch', touch)
redis.register_function('triact_4_release', release)
redis.register_function('triact_4_remove', remove)
redis.register_function('triact_4_expire', expire)
redis.register_function('triact_4_record_put', record_put)
redis.register_function('triact_4_record_swap', record_swap)
redis.register_function('triact_4_record_get', record_get)
redis.register_function{function_name = 'triact_4_page', callback = page,
                        flags = {'no-writes'}}
"""


def function(name: str) -> str:
    """The library's name for one of its functions."""
    return f"{LIBRARY}_{name}"
