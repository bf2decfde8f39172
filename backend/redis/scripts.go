package redis

import goredis "github.com/redis/go-redis/v9"

// The Lua scripts. Each touches only keys it is given (all under one
// context's hash tag), so it is legal in Redis Cluster; a script that
// touched an undeclared key would fail halfway with its earlier writes kept.
// Errors are error replies starting with a CONTEXTD_ code and the index of
// the op, condition or lease concerned, translated by the caller
// (commitError, corruptError).

// luaPrelude holds the helpers every script shares. A script reports
// damage to contextd's own keys (a key of the wrong type, a field that
// does not parse) as CONTEXTD_CORRUPT <index> <role>, which the Go side
// turns into backend.ErrCorrupt naming the key; it checks before it
// writes, so a refused commit writes nothing.
//
//	roles: meta (wrong type), meta.rev, meta.epoch, meta.commit,
//	meta.parent, meta.fence, meta.ticket, data, revs, log, commit (the
//	commit's id key), revs.field (the field of condition <index>), lock
//	(lock key <index> of the script's lock keys), queue (queue key
//	<index>), waiters
const luaPrelude = `
local function corrupt(role, i)
  return redis.error_reply('CONTEXTD_CORRUPT ' .. (i or 0) .. ' ' .. role)
end
-- failed turns the error of a redis.pcall into the script's refusal: a
-- key of the wrong type is damage (CONTEXTD_CORRUPT); any other error (a
-- command the ACL forbids, out of memory) is passed on as it is.
local function failed(res, role, i)
  if string.find(res['err'], 'WRONGTYPE', 1, true) then return corrupt(role, i) end
  return redis.error_reply(res['err'])
end
-- counterFailed is failed for HINCRBY of a counter field of meta, which
-- also fails when the field does not hold an integer.
local function counterFailed(res, field)
  if string.find(res['err'], 'WRONGTYPE', 1, true) then return corrupt('meta') end
  if string.find(res['err'], 'not an integer', 1, true) then return corrupt('meta.' .. field) end
  return redis.error_reply(res['err'])
end
local function typeIs(key, want)
  local t = redis.call('TYPE', key)['ok']
  return t == 'none' or t == want
end
-- readMeta returns the meta fields codec, epoch, rev, commit, parent, or
-- nil and the refusal if they are damaged.
local function readMeta(meta)
  local m = redis.pcall('HMGET', meta, 'codec', 'epoch', 'rev', 'commit', 'parent')
  if m['err'] then return nil, failed(m, 'meta') end
  if m[2] and (#m[2] == 0 or #m[2] > 255) then return nil, corrupt('meta.epoch') end
  if m[3] and not string.match(m[3], '^%d+$') then return nil, corrupt('meta.rev') end
  if m[4] and (#m[4] > 255 or string.find(m[4], '%s')) then return nil, corrupt('meta.commit') end
  if m[5] and (#m[5] > 255 or string.find(m[5], '%s')) then return nil, corrupt('meta.parent') end
  return m, nil
end
-- nowMs returns the server's clock in milliseconds.
local function nowMs()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- The fair lock queues: a sorted set per key, waiter ids scored by ticket,
-- and one hash of the context's waiters, id -> "<ticket> <deadline ms>
-- <number of queues it is in>". Both expire when no waiter has tried for
-- a hold, so the queues of waiters that died go away.
local function parseWaiter(v)
  if not v then return nil end
  local t, d, n = string.match(v, '^(%d+) (%d+) (%d+)$')
  if not t then return nil end
  return tonumber(t), tonumber(d), tonumber(n)
end
--
-- queueHead returns the live waiter first in queue q (false if none),
-- dropping waiters whose deadline (by now(), called only if needed) has
-- passed; or nil and the refusal if a key is damaged. i indexes q.
local function queueHead(q, waiters, now, i)
  while true do
    local h = redis.pcall('ZRANGE', q, 0, 0)
    if h['err'] then return nil, failed(h, 'queue', i) end
    if #h == 0 then return false end
    local v = redis.pcall('HGET', waiters, h[1])
    if type(v) == 'table' then return nil, failed(v, 'waiters') end
    local _, dl = parseWaiter(v)
    if dl and dl > now() then return h[1] end
    -- Dead: gone from here, and from every other queue as soon as one
    -- finds it missing from waiters.
    redis.call('ZREM', q, h[1])
    if v then redis.call('HDEL', waiters, h[1]) end
  end
end
-- enqueue gives waiter id its place in queue q: the ticket it holds, or
-- the context's next one, and a deadline hold ms from now. It returns the
-- refusal if meta's ticket counter is damaged.
local function enqueue(q, waiters, meta, id, now, hold)
  local ticket, _, n = parseWaiter(redis.call('HGET', waiters, id))
  if not ticket then
    ticket = redis.pcall('HINCRBY', meta, 'ticket', 1)
    if type(ticket) == 'table' then return counterFailed(ticket, 'ticket') end
    n = 0
  end
  n = n + redis.call('ZADD', q, ticket, id)
  redis.call('HSET', waiters, id, ticket .. ' ' .. (now() + hold) .. ' ' .. n)
  redis.call('PEXPIRE', waiters, hold)
  redis.call('PEXPIRE', q, hold)
  return nil
end
-- leave removes waiter id from queue q, and from waiters once it is in no
-- queue; it reports whether id was first and others wait behind it (they
-- are to be woken).
local function leave(q, waiters, id)
  local h = redis.call('ZRANGE', q, 0, 0)
  if redis.call('ZREM', q, id) == 0 then return false end
  local ticket, dl, n = parseWaiter(redis.call('HGET', waiters, id))
  if ticket and n > 1 then
    redis.call('HSET', waiters, id, ticket .. ' ' .. dl .. ' ' .. (n - 1))
  else
    redis.call('HDEL', waiters, id)
  end
  return h[1] == id and redis.call('ZCARD', q) > 0
end
-- wake tells the waiters of key that they may try again.
local function wake(channel, sharded, key)
  if channel == '' then return end
  if sharded == '1' then
    redis.call('SPUBLISH', channel, key)
  else
    redis.call('PUBLISH', channel, key)
  end
end
-- lazyNow returns a function giving the server's clock in ms, read once.
local function lazyNow()
  local t
  return function()
    if not t then t = nowMs() end
    return t
  end
end
-- readLock returns a lock key's value "<token>:<fence>" (false when free),
-- or nil and the refusal if the key is damaged; i is its index for the
-- refusal.
local function readLock(key, i)
  local v = redis.pcall('GET', key)
  if type(v) == 'table' then return nil, failed(v, 'lock', i) end
  if v and not string.match(v, '^.+:%d+$') then return nil, corrupt('lock', i) end
  return v, nil
end
`

// commitScript checks and applies a batch, appends its event to the change
// log and publishes it.
//
//	KEYS: meta, data, revs, log, the commit's id key, waiters, then (if
//	      lock checks) the lock key of each op, then (if fair) the queue
//	      key of each op, then the lock key of each lease
//	ARGV: codec, epoch candidate, channel ("" = no publish), sharded
//	      ("1" = SPUBLISH), log length ("0" = no log), event body, #ops,
//	      #conditions, #leases, check locks ("1"), commit id, remember ("1":
//	      keep the commit's head under its id key for a minute), fair
//	      ("1": queues), waiter id ("" = none), hold in ms, unlock
//	      channel, then per op: key, "p"|"d", value; per condition: key,
//	      then the revision, or "<revision> <commit id>" to check the
//	      writing commit too; per lease: key, lock value
//	returns {epoch, revision, commit id, parent commit id}
//
// Checks run in this order, and all before the first write: codec, leases
// (CONTEXTD_NOTHELD), locks and queues (CONTEXTD_LOCKED: a key locked by
// another holder, or with a live waiter queued before this one, when no
// lease of the batch covers it), conditions (CONTEXTD_CONFLICT). A refused
// waiter is queued on the keys concerned; a committed one leaves its
// queues and wakes the next waiter.
//
// The commit id makes a resend of the same commit (a client retrying after
// a lost reply) return the original head instead of writing again: always
// when no other commit came in between, and with remember set at any time
// within a minute — for clients that resend whatever they are told, as
// go-redis's ClusterClient does on a broken connection.
var commitScript = goredis.NewScript(luaPrelude + `
local meta, data, revs, log = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local codec, epochNew, channel, sharded = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local logLen, body = tonumber(ARGV[5]), ARGV[6]
local nOps, nConds, nLeases = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
local checkLocks = ARGV[10] == '1'
local commitID, remember = ARGV[11], ARGV[12] == '1'
local fair, waiterID, hold, unlock = ARGV[13] == '1', ARGV[14], tonumber(ARGV[15]), ARGV[16]
local waiters = KEYS[6]
local opsAt = 17
local condsAt = opsAt + 3 * nOps
local leasesAt = condsAt + 2 * nConds

local m, bad = readMeta(meta)
if bad then return bad end
local storedCodec, epoch = m[1], m[2]
if m[4] == commitID and epoch then
  return {epoch, tonumber(m[3]), commitID, m[5] or ''}
end
if remember then
  local seen = redis.pcall('GET', KEYS[5])
  if type(seen) == 'table' then return failed(seen, 'commit') end
  if seen then
    local e, r, p = string.match(seen, '^(%S+) (%d+) (%S*)$')
    if not e then return corrupt('commit') end
    return {e, tonumber(r), commitID, p}
  end
end
local parent = m[4] or ''
if not epoch then parent = '' end
if storedCodec and codec ~= '' and storedCodec ~= codec then
  return redis.error_reply('CONTEXTD_CODEC 0 ' .. storedCodec)
end
local lockKeysAt, queueKeysAt, leaseKeysAt = 7, 7, 7
if checkLocks then
  queueKeysAt = lockKeysAt + nOps
  leaseKeysAt = queueKeysAt
  if fair then leaseKeysAt = queueKeysAt + nOps end
end
local now = lazyNow()
local tokens, leased = {}, {}
for i = 0, nLeases - 1 do
  local tok = ARGV[leasesAt + 2 * i + 1]
  local held, lockBad = readLock(KEYS[leaseKeysAt + i], nOps + i)
  if lockBad then return lockBad end
  if held ~= tok then
    return redis.error_reply('CONTEXTD_NOTHELD ' .. i)
  end
  tokens[tok] = true
  leased[ARGV[leasesAt + 2 * i]] = true
end
local queued = waiterID ~= '' and fair
local first = {} -- ops whose queue this waiter is first in
if checkLocks then
  local blocked
  for i = 0, nOps - 1 do
    if not leased[ARGV[opsAt + 3 * i]] then
      local holder, lockBad = readLock(KEYS[lockKeysAt + i], i)
      if lockBad then return lockBad end
      local wait = holder and not tokens[holder]
      if not wait and fair then
        local head, qBad = queueHead(KEYS[queueKeysAt + i], waiters, now, i)
        if qBad then return qBad end
        wait = head and head ~= waiterID
        first[i] = head and head == waiterID
      end
      if wait then
        if queued then
          local bad = enqueue(KEYS[queueKeysAt + i], waiters, meta, waiterID, now, hold)
          if bad then return bad end
        end
        blocked = blocked or i
      end
    end
  end
  if blocked then return redis.error_reply('CONTEXTD_LOCKED ' .. blocked) end
end
-- revs holds "<revision> <commit id>" per key ("<revision>" if written
-- by an older version); a condition without a commit id compares only the
-- revision. A field that is neither, or a value without a revision (or
-- the reverse), is damage, not a conflict: retrying could never meet the
-- condition.
for i = 0, nConds - 1 do
  local key, want = ARGV[condsAt + 2 * i], ARGV[condsAt + 2 * i + 1]
  local have = redis.pcall('HGET', revs, key)
  if type(have) == 'table' then return failed(have, 'revs') end
  if have and not string.match(have, '^%d+ %S+$') and not string.match(have, '^%d+$') then
    return corrupt('revs.field', i)
  end
  local exists = redis.pcall('HEXISTS', data, key)
  if type(exists) == 'table' then return failed(exists, 'data') end
  if (exists == 1) ~= (have ~= false) then return corrupt('revs.field', i) end
  have = have or '0'
  if not string.find(want, ' ', 1, true) then
    have = string.match(have, '^%S*')
  end
  if have ~= want then
    -- The writer lost a race: keep its place for the retry.
    if queued and checkLocks then
      for j = 0, nOps - 1 do
        if not leased[ARGV[opsAt + 3 * j]] then
          local bad = enqueue(KEYS[queueKeysAt + j], waiters, meta, waiterID, now, hold)
          if bad then return bad end
        end
      end
    end
    return redis.error_reply('CONTEXTD_CONFLICT ' .. i)
  end
end
-- Every key written below must be of its type, or the script would stop
-- halfway with its earlier writes kept.
if not typeIs(data, 'hash') then return corrupt('data') end
if not typeIs(revs, 'hash') then return corrupt('revs') end
if logLen > 0 and not typeIs(log, 'stream') then return corrupt('log') end

-- One HSET records the new revision, the commit and its parent and, for a
-- context without them, the epoch and codec.
local fresh = not epoch
local rev = 1
if fresh then
  epoch = epochNew
else
  rev = tonumber(m[3] or '0') + 1
end
local metaSet = {'rev', rev, 'commit', commitID, 'parent', parent}
if fresh then
  metaSet[#metaSet + 1] = 'epoch'
  metaSet[#metaSet + 1] = epoch
end
if not storedCodec and codec ~= '' then
  metaSet[#metaSet + 1] = 'codec'
  metaSet[#metaSet + 1] = codec
end
redis.call('HSET', meta, unpack(metaSet))

-- unpack has a stack limit, so large batches go in chunks.
local function flush(cmd, key, args)
  local chunk = 1000
  for i = 1, #args, chunk do
    redis.call(cmd, key, unpack(args, i, math.min(i + chunk - 1, #args)))
  end
end
local puts, putRevs, dels = {}, {}, {}
for i = 0, nOps - 1 do
  local k = ARGV[opsAt + 3 * i]
  if ARGV[opsAt + 3 * i + 1] == 'p' then
    puts[#puts + 1] = k
    puts[#puts + 1] = ARGV[opsAt + 3 * i + 2]
    putRevs[#putRevs + 1] = k
    putRevs[#putRevs + 1] = rev .. ' ' .. commitID
  else
    dels[#dels + 1] = k
  end
end
flush('HSET', data, puts)
flush('HSET', revs, putRevs)
flush('HDEL', data, dels)
flush('HDEL', revs, dels)

-- The event header, as backend.FrameEvent writes it: version 1, kind 1,
-- epoch length and bytes, revision as 8 bytes big-endian, commit id and
-- parent id, each with its length.
local r, b = rev, {}
for i = 8, 1, -1 do
  b[i] = r % 256
  r = math.floor(r / 256)
end
local payload = string.char(1, 1, #epoch) .. epoch .. string.char(unpack(b)) ..
  string.char(#commitID) .. commitID .. string.char(#parent) .. parent .. body
if logLen > 0 then
  if fresh then redis.call('DEL', log) end
  redis.call('XADD', log, 'MAXLEN', '~', logLen, '*', 'r', rev, 'e', payload)
end
if channel ~= '' then
  if sharded == '1' then
    redis.call('SPUBLISH', channel, payload)
  else
    redis.call('PUBLISH', channel, payload)
  end
end
if remember then
  redis.call('SET', KEYS[5], epoch .. ' ' .. rev .. ' ' .. parent, 'PX', 60000)
end
if queued and checkLocks then
  for i = 0, nOps - 1 do
    if first[i] and leave(KEYS[queueKeysAt + i], waiters, waiterID) then
      wake(unlock, sharded, ARGV[opsAt + 3 * i])
    end
  end
end
return {epoch, rev, commitID, parent}
`)

// getScript reads one entry.
//
//	KEYS: data, revs; ARGV: key
//	returns {value or nil, revision field or nil}
var getScript = goredis.NewScript(luaPrelude + `
local v = redis.pcall('HGET', KEYS[1], ARGV[1])
if type(v) == 'table' then return failed(v, 'data') end
local r = redis.pcall('HGET', KEYS[2], ARGV[1])
if type(r) == 'table' then return failed(r, 'revs') end
return {v, r}
`)

// changesScript reads the newest events of the log, enough to reach back
// to a revision.
//
//	KEYS: meta, log; ARGV: after, most events to return
//	returns {epoch, revision, entries newest first} or, when more events
//	than allowed are missing, {epoch, revision, false}
var changesScript = goredis.NewScript(luaPrelude + `
local m, bad = readMeta(KEYS[1])
if bad then return bad end
local epoch, rev = m[2] or '', tonumber(m[3] or '0')
local n = rev - tonumber(ARGV[1])
if n <= 0 then return {epoch, rev, {}} end
if n > tonumber(ARGV[2]) then return {epoch, rev, false} end
local entries = redis.pcall('XREVRANGE', KEYS[2], '+', '-', 'COUNT', n)
if entries['err'] then return failed(entries, 'log') end
return {epoch, rev, entries}
`)

// acquireScript takes a lock and draws its fencing token. The lock's value
// is "<token>:<fence>", so a resend of an acquisition whose reply was lost
// finds its own token and returns the same fence instead of failing.
//
//	KEYS: lock key, meta, queue key, waiters
//	ARGV: token, ttl in ms, fair ("1": queues), waiter id ("" = none),
//	      hold in ms
//	returns the fencing token, or nil when another holder has the lock
//	or (fair) a live waiter was queued before this one; such a waiter is
//	queued
//
// A counter that is missing (the data was lost) starts again from the
// server's clock in microseconds, above every token drawn before as long
// as the clock did not go back, rather than from 1.
var acquireScript = goredis.NewScript(luaPrelude + `
local fair, waiterID, hold = ARGV[3] == '1', ARGV[4], tonumber(ARGV[5])
local held, bad = readLock(KEYS[1], 0)
if bad then return bad end
if held then
  local token, fence = string.match(held, '^(.*):(%d+)$')
  if token == ARGV[1] then return tonumber(fence) end
end
local now = lazyNow()
local first = false
if fair then
  local head, qBad = queueHead(KEYS[3], KEYS[4], now, 0)
  if qBad then return qBad end
  if held or head and head ~= waiterID then
    if waiterID ~= '' then
      local eBad = enqueue(KEYS[3], KEYS[4], KEYS[2], waiterID, now, hold)
      if eBad then return eBad end
    end
    return false
  end
  first = head == waiterID
elseif held then
  return false
end
local fence = redis.pcall('HINCRBY', KEYS[2], 'fence', 1)
if type(fence) == 'table' then return counterFailed(fence, 'fence') end
if fence == 1 then
  local t = redis.call('TIME')
  fence = tonumber(t[1]) * 1000000 + tonumber(t[2])
  redis.call('HSET', KEYS[2], 'fence', fence)
end
redis.call('SET', KEYS[1], ARGV[1] .. ':' .. string.format('%d', fence), 'PX', ARGV[2])
if first then
  -- The lock is held now: the waiters behind wait for its release.
  leave(KEYS[3], KEYS[4], waiterID)
end
return fence
`)

// dequeueScript removes a waiter that stopped waiting from the queues of
// keys, and wakes the next waiter of a queue it was first in.
//
//	KEYS: waiters, then the queue key of each key
//	ARGV: waiter id, unlock channel ("" = none), sharded, then the keys
//	returns the number of queues it left
var dequeueScript = goredis.NewScript(luaPrelude + `
local id, unlock, sharded = ARGV[1], ARGV[2], ARGV[3]
if not typeIs(KEYS[1], 'hash') then return corrupt('waiters') end
local n = 0
for i = 2, #KEYS do
  local q = KEYS[i]
  local ok = redis.pcall('ZSCORE', q, id)
  if type(ok) == 'table' then return failed(ok, 'queue', i - 2) end
  if ok then
    n = n + 1
    if leave(q, KEYS[1], id) then wake(unlock, sharded, ARGV[i + 2]) end
  end
end
return n
`)

// releaseScript deletes a lock if the lease holds it and tells waiters.
//
//	KEYS: lock key; ARGV: lock value, unlock channel ("" = none), sharded,
//	key
//	returns 1 if released, 0 if not held
var releaseScript = goredis.NewScript(luaPrelude + `
local held, bad = readLock(KEYS[1], 0)
if bad then return bad end
if held ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
if ARGV[2] ~= '' then
  if ARGV[3] == '1' then
    redis.call('SPUBLISH', ARGV[2], ARGV[4])
  else
    redis.call('PUBLISH', ARGV[2], ARGV[4])
  end
end
return 1
`)

// extendScript resets a lock's TTL if the lease holds it.
//
//	KEYS: lock key; ARGV: lock value, ttl in ms
//	returns 1 if extended, 0 if not held
var extendScript = goredis.NewScript(luaPrelude + `
local held, bad = readLock(KEYS[1], 0)
if bad then return bad end
if held ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
`)
