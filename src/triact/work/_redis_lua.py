"""The Redis Functions library behind RedisWorkStore: each change of the work layer's
keys is one call of one of these functions, which Redis runs atomically (no other
command runs between its reads and its writes), so a note, its index entries, the
statistics of its kind and the eviction of the oldest notes of its bucket happen at
once or not at all.

Keys, under the store's prefix ``P`` and ``N = P .. 'work:' .. K ..':'`` for each kind
of note ``K`` (``r`` reflections, ``c`` conversation excerpts); ``O`` is a principal
(``''`` for none) and ``J`` a project (``''`` for none), each written as
``<byte length>:<text>`` so that no two buckets share a key:

- ``Nseq``: the last id given (ids only grow, per kind, whoever's).
- ``Nn:<id>``: hash of a note: ``o`` principal, ``p`` project, ``c`` content, ``t``
  its tags (a JSON list), ``a`` created_at, ``d`` its length in tokens, ``w`` its
  distinct tokens (a JSON list, to take it out of the index), ``m`` and ``v`` the
  model and vector (float32 bytes) of its embedding, if it has one.
- ``Nall``: sorted set of every note's id (score: the id); ``Nvall:<model>`` of those
  with a vector of that model.
- ``Ndf``: hash token -> how many notes hold it; ``Nstats``: hash ``n`` notes and
  ``tok`` tokens in all: bm25's statistics, over the whole kind as FTS5 keeps them
  over its whole table.
- ``No:<O>``: set of the principal's projects.
- ``B = Nb:<O>:<J>|``, a bucket: ``Bids`` sorted set of its ids (score: the id),
  ``Bdl`` hash id -> length in tokens, ``Bt:<token>`` hash id -> the token's count
  in the note (the inverted index), ``Bg:<tag>`` set of the ids with the tag,
  ``Bv:<model>`` sorted set of the ids with a vector of that model.
- ``P work:d:<O>``: hash directory -> the id of its session; ``P work:h:<O>``: hash
  directory -> its last handoff (JSON).

Keys are derived from the prefix inside the functions (as the sessions' library
does): a standalone Redis (or Valkey), not a cluster.
"""

from __future__ import annotations

#: The library's name, which versions it: a triact whose functions or keys change
#: bumps it, so that processes of two versions can share one Redis during an upgrade.
LIBRARY = "triact_work_2"

SOURCE = """#!lua name=triact_work_2

local function nbase(p, k) return p .. 'work:' .. k .. ':' end
local function part(s) return #s .. ':' .. s end
local function bbase(nb, owner, project)
  return nb .. 'b:' .. part(owner) .. ':' .. part(project) .. '|'
end

-- What dropping note id takes (reads only, so that a note this library did not write
-- fails the call before it changes anything): nil if its hash is malformed.
local function plan_drop(nb, id)
  local r = redis.call('HMGET', nb .. 'n:' .. id, 'w', 't', 'd', 'm')
  local ok_w, w = pcall(cjson.decode, r[1] or '[]')
  local ok_t, t = pcall(cjson.decode, r[2] or '[]')
  local d = tonumber(r[3] or '0')
  if not (ok_w and ok_t and type(w) == 'table' and type(t) == 'table' and d) then
    return nil
  end
  return {id = id, tokens = w, tags = t, length = d, model = r[4]}
end

-- Take a planned note out of bucket bb and every index.
local function drop(nb, bb, plan)
  local id = plan.id
  for _, tok in ipairs(plan.tokens) do
    redis.call('HDEL', bb .. 't:' .. tok, id)
    if redis.call('HINCRBY', nb .. 'df', tok, -1) <= 0 then
      redis.call('HDEL', nb .. 'df', tok)
    end
  end
  for _, tag in ipairs(plan.tags) do redis.call('SREM', bb .. 'g:' .. tag, id) end
  redis.call('HINCRBY', nb .. 'stats', 'n', -1)
  redis.call('HINCRBY', nb .. 'stats', 'tok', -plan.length)
  if plan.model then
    redis.call('ZREM', bb .. 'v:' .. plan.model, id)
    redis.call('ZREM', nb .. 'vall:' .. plan.model, id)
  end
  redis.call('ZREM', bb .. 'ids', id)
  redis.call('ZREM', nb .. 'all', id)
  redis.call('HDEL', bb .. 'dl', id)
  redis.call('DEL', nb .. 'n:' .. id)
end

-- ARGV: prefix kind owner project content tags_json created_at keep length
--       tokens_json ntok (token count)*ntok ntags tag*ntags
-- -> {id, kept, dropped}; an error, before any change, if a note it would drop is
-- malformed.
local function add(keys, args)
  local p, k, owner, project = args[1], args[2], args[3], args[4]
  local nb = nbase(p, k)
  local bb = bbase(nb, owner, project)
  local keep, length = tonumber(args[8]), tonumber(args[9])
  -- The oldest beyond the bound once this one is in (never this one: keep >= 1).
  local total = redis.call('ZCARD', bb .. 'ids') + 1
  local plans = {}
  if total > keep then
    for _, old in ipairs(redis.call('ZRANGE', bb .. 'ids', 0, total - keep - 1)) do
      local plan = plan_drop(nb, old)
      if not plan then
        return redis.error_reply('note ' .. old .. ' of its project is malformed (written ' ..
                                 'by something else); nothing was stored')
      end
      plans[#plans + 1] = plan
    end
  end
  local id = redis.call('INCR', nb .. 'seq')
  redis.call('HSET', nb .. 'n:' .. id, 'o', owner, 'p', project, 'c', args[5],
             't', args[6], 'a', args[7], 'd', length, 'w', args[10])
  redis.call('ZADD', bb .. 'ids', id, id)
  redis.call('ZADD', nb .. 'all', id, id)
  redis.call('HSET', bb .. 'dl', id, length)
  redis.call('SADD', nb .. 'o:' .. part(owner), project)
  local ntok = tonumber(args[11])
  local i = 12
  for _ = 1, ntok do
    redis.call('HSET', bb .. 't:' .. args[i], id, args[i + 1])
    redis.call('HINCRBY', nb .. 'df', args[i], 1)
    i = i + 2
  end
  local ntags = tonumber(args[i])
  for j = 1, ntags do redis.call('SADD', bb .. 'g:' .. args[i + j], id) end
  redis.call('HINCRBY', nb .. 'stats', 'n', 1)
  redis.call('HINCRBY', nb .. 'stats', 'tok', length)
  for _, plan in ipairs(plans) do drop(nb, bb, plan) end
  return {id, total - #plans, #plans}
end

-- The buckets a read looks at: the project's, or every project of the owner's.
local function buckets(nb, owner, all, project)
  if all == '1' then
    local found = {}
    for _, j in ipairs(redis.call('SMEMBERS', nb .. 'o:' .. part(owner))) do
      found[#found + 1] = bbase(nb, owner, j)
    end
    return found
  end
  return {bbase(nb, owner, project)}
end

local function tagged(bb, id, tags)
  for _, tag in ipairs(tags) do
    if redis.call('SISMEMBER', bb .. 'g:' .. tag, id) == 0 then return false end
  end
  return true
end

-- A flat HGETALL reply as a table field -> number.
local function hash_table(flat)
  local out = {}
  for x = 1, #flat, 2 do out[flat[x]] = tonumber(flat[x + 1]) end
  return out
end

-- The members of each tag's set in bucket bb, as lookup tables.
local function tag_sets(bb, tags)
  local sets = {}
  for j, tag in ipairs(tags) do
    local members = {}
    for _, id in ipairs(redis.call('SMEMBERS', bb .. 'g:' .. tag)) do members[id] = true end
    sets[j] = members
  end
  return sets
end

local function in_all(sets, id)
  for _, members in ipairs(sets) do
    if not members[id] then return false end
  end
  return true
end

-- Read the tags of a read's arguments from position i: -> tags, next position.
local function read_tags(args, i)
  local tags = {}
  local ntags = tonumber(args[i])
  for j = 1, ntags do tags[j] = args[i + j] end
  return tags, i + ntags + 1
end

local function row(nb, id, extra)
  local r = redis.call('HMGET', nb .. 'n:' .. id, 'p', 'c', 't', 'a')
  return {id, r[1], r[2], r[3], r[4], extra}
end

-- ARGV: prefix kind owner all project limit ntags tag*ntags token* (one per phrase,
-- in the query's order) -> {id, project, content, tags, created_at, score}* best
-- first, newest first among equal scores. The score is FTS5's bm25 (k1 1.2, b 0.75,
-- the statistics of the whole kind), negated: higher is better.
local function search(keys, args)
  local nb = nbase(args[1], args[2])
  local limit = tonumber(args[6])
  local tags, i = read_tags(args, 7)
  local phrases = {}
  for j = i, #args do phrases[#phrases + 1] = args[j] end
  local stats = redis.call('HMGET', nb .. 'stats', 'n', 'tok')
  local n = tonumber(stats[1] or '0')
  if n <= 0 or #phrases == 0 then return {} end
  local avgdl = tonumber(stats[2] or '0') / n
  local idf = {}
  for j, tok in ipairs(phrases) do
    local hit = tonumber(redis.call('HGET', nb .. 'df', tok) or '0')
    local value = math.log((n - hit + 0.5) / (hit + 0.5))
    if value <= 0.0 then value = 1e-6 end
    idf[j] = value
  end
  local k1, b = 1.2, 0.75
  local nphrases = #phrases
  local ids, scores, count = {}, {}, 0
  for _, bb in ipairs(buckets(nb, args[3], args[4], args[5])) do
    local freq = {}  -- per phrase: id -> its count in the note
    local order = {}  -- the ids with any, in the order first seen
    local seen = {}
    for j, tok in ipairs(phrases) do
      local counts = {}
      local flat = redis.call('HGETALL', bb .. 't:' .. tok)
      for x = 1, #flat, 2 do
        local id = flat[x]
        counts[id] = tonumber(flat[x + 1])
        if not seen[id] then
          seen[id] = true
          order[#order + 1] = id
        end
      end
      freq[j] = counts
    end
    -- Many candidates: the lengths (and tag sets) in one read each, not one per note.
    local many = #order > 64
    local lengths = many and hash_table(redis.call('HGETALL', bb .. 'dl')) or nil
    local sets = many and tag_sets(bb, tags) or nil
    for _, id in ipairs(order) do
      if (sets and in_all(sets, id)) or (not sets and tagged(bb, id, tags)) then
        local d
        if lengths then d = lengths[id] else d = tonumber(redis.call('HGET', bb .. 'dl', id)) end
        -- FTS5's sum, phrase by phrase (one without the token adds 0).
        local norm = k1 * (1 - b + b * d / avgdl)
        local score = 0.0
        for j = 1, nphrases do
          local c = freq[j][id]
          if c then score = score + idf[j] * ((c * (k1 + 1.0)) / (c + norm)) end
        end
        count = count + 1
        ids[count] = tonumber(id)
        scores[count] = score
      end
    end
  end
  -- The best limit: those above the limit-th best score, then of those tied with it
  -- the newest (creation time, then id), found by sorting numbers, not records.
  local function created(id) return tonumber(redis.call('HGET', nb .. 'n:' .. id, 'a')) end
  local best = {}
  if #scores <= limit then
    for x, id in ipairs(ids) do best[x] = {id, scores[x], created(id)} end
  else
    local sorted = {}
    for x, s in ipairs(scores) do sorted[x] = s end
    table.sort(sorted)
    local floor = sorted[#sorted - limit + 1]
    local tied = {}
    for x, id in ipairs(ids) do
      if scores[x] > floor then
        best[#best + 1] = {id, scores[x], created(id)}
      elseif scores[x] == floor then
        tied[#tied + 1] = id
      end
    end
    local room = limit - #best
    local times, at = {}, {}
    for x, id in ipairs(tied) do
      at[id] = created(id)
      times[x] = at[id]
    end
    table.sort(times)
    local newest = times[#times - room + 1]
    for _, id in ipairs(tied) do
      if at[id] >= newest then best[#best + 1] = {id, floor, at[id]} end
    end
  end
  table.sort(best, function(l, r)
    if l[2] ~= r[2] then return l[2] > r[2] end
    if l[3] ~= r[3] then return l[3] > r[3] end
    return l[1] > r[1]
  end)
  local out = {}
  for x = 1, math.min(limit, #best) do
    out[x] = row(nb, best[x][1], string.format('%.17g', best[x][2]))
  end
  return out
end

-- ARGV: prefix kind owner id* -> the owner's notes of these ids still kept, as rows.
local function notes(keys, args)
  local nb = nbase(args[1], args[2])
  local out = {}
  for x = 4, #args do
    local owner = redis.call('HGET', nb .. 'n:' .. args[x], 'o')
    if owner == args[3] then out[#out + 1] = row(nb, args[x], '') end
  end
  return out
end

-- ARGV: prefix kind owner all project model after chunk ntags tag*ntags
-- -> {more, cursor, {id, created_at, vector}*}: of the first chunk ids above after
-- with a vector of model (by id), those with every tag; more: there may be others
-- above cursor.
local function vectors(keys, args)
  local nb = nbase(args[1], args[2])
  local model, after, chunk = args[6], args[7], tonumber(args[8])
  local tags = read_tags(args, 9)
  local seen = {}
  for _, bb in ipairs(buckets(nb, args[3], args[4], args[5])) do
    local ids = redis.call('ZRANGE', bb .. 'v:' .. model, '(' .. after, '+inf', 'BYSCORE',
                           'LIMIT', 0, chunk)
    for _, id in ipairs(ids) do seen[#seen + 1] = {tonumber(id), bb} end
  end
  table.sort(seen, function(l, r) return l[1] < r[1] end)
  local more = 0
  if #seen >= chunk then more = 1 end
  local out = {}
  local cursor = after
  for x = 1, math.min(chunk, #seen) do
    local id, bb = seen[x][1], seen[x][2]
    cursor = id
    if #tags == 0 or tagged(bb, id, tags) then
      local r = redis.call('HMGET', nb .. 'n:' .. id, 'a', 'v')
      out[#out + 1] = {id, r[1], r[2]}
    end
  end
  return {more, cursor, out}
end

-- ARGV: prefix kind owner all project model ntags tag*ntags -> {count, low, high}
-- of the notes with a vector of model, with every tag.
local function signature(keys, args)
  local nb = nbase(args[1], args[2])
  local model = args[6]
  local tags = read_tags(args, 7)
  local count, low, high = 0, 0, 0
  local function saw(id)
    count = count + 1
    if low == 0 or id < low then low = id end
    if id > high then high = id end
  end
  for _, bb in ipairs(buckets(nb, args[3], args[4], args[5])) do
    local zk = bb .. 'v:' .. model
    if #tags == 0 then
      local c = redis.call('ZCARD', zk)
      if c > 0 then
        count = count + c - 1
        saw(tonumber(redis.call('ZRANGE', zk, 0, 0)[1]))
        high = math.max(high, tonumber(redis.call('ZRANGE', zk, -1, -1)[1]))
      end
    else
      for _, id in ipairs(redis.call('SMEMBERS', bb .. 'g:' .. tags[1])) do
        if redis.call('ZSCORE', zk, id) and tagged(bb, id, tags) then saw(tonumber(id)) end
      end
    end
  end
  return {count, low, high}
end

-- ARGV: prefix kind model limit -> {id, content}* of up to limit notes without a
-- vector of model, newest first, whoever's.
local function missing(keys, args)
  local nb = nbase(args[1], args[2])
  local all, with = nb .. 'all', nb .. 'vall:' .. args[3]
  if redis.call('ZCARD', all) == redis.call('ZCARD', with) then return {} end
  local ids = redis.call('ZDIFF', 2, all, with)
  local out = {}
  local x = #ids
  while x >= 1 and #out < tonumber(args[4]) do
    out[#out + 1] = {tonumber(ids[x]), redis.call('HGET', nb .. 'n:' .. ids[x], 'c')}
    x = x - 1
  end
  return out
end

-- ARGV: prefix kind model (id vector)* -> how many were kept (notes still there).
local function put_vectors(keys, args)
  local nb = nbase(args[1], args[2])
  local model = args[3]
  local kept = 0
  for x = 4, #args, 2 do
    local id = args[x]
    local nk = nb .. 'n:' .. id
    local r = redis.call('HMGET', nk, 'o', 'p', 'm')
    if r[1] then
      local bb = bbase(nb, r[1], r[2])
      if r[3] and r[3] ~= model then
        redis.call('ZREM', bb .. 'v:' .. r[3], id)
        redis.call('ZREM', nb .. 'vall:' .. r[3], id)
      end
      redis.call('HSET', nk, 'm', model, 'v', args[x + 1])
      redis.call('ZADD', bb .. 'v:' .. model, id, id)
      redis.call('ZADD', nb .. 'vall:' .. model, id, id)
      kept = kept + 1
    end
  end
  return kept
end

-- ARGV: prefix owner directory session_id record: keep the handoff, and forget the
-- session as the directory's if it still is.
local function finish(keys, args)
  local owner = part(args[2])
  redis.call('HSET', args[1] .. 'work:h:' .. owner, args[3], args[5])
  local dirs = args[1] .. 'work:d:' .. owner
  if redis.call('HGET', dirs, args[3]) == args[4] then redis.call('HDEL', dirs, args[3]) end
  return 1
end

-- ARGV: prefix owner directory session_id expected|'': record the session as the
-- directory's if it names none, or expected; -> nil once recorded, else the id it names.
local function claim(keys, args)
  local dirs = args[1] .. 'work:d:' .. part(args[2])
  local held = redis.call('HGET', dirs, args[3])
  if held and held ~= args[5] then return held end
  redis.call('HSET', dirs, args[3], args[4])
  return false
end

redis.register_function('triact_work_2_add', add)
redis.register_function('triact_work_2_claim', claim)
redis.register_function('triact_work_2_put_vectors', put_vectors)
redis.register_function('triact_work_2_finish', finish)
redis.register_function{function_name = 'triact_work_2_search', callback = search,
                        flags = {'no-writes'}}
redis.register_function{function_name = 'triact_work_2_notes', callback = notes,
                        flags = {'no-writes'}}
redis.register_function{function_name = 'triact_work_2_vectors', callback = vectors,
                        flags = {'no-writes'}}
redis.register_function{function_name = 'triact_work_2_signature', callback = signature,
                        flags = {'no-writes'}}
redis.register_function{function_name = 'triact_work_2_missing', callback = missing,
                        flags = {'no-writes'}}
"""


def function(name: str) -> str:
    """The library's name for one of its functions."""
    return f"{LIBRARY}_{name}"
