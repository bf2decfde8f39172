package redis

import goredis "github.com/redis/go-redis/v9"

// The Lua scripts. Each touches only keys it is given (all under one
// context's hash tag), so it is legal in Redis Cluster; a script that
// touched an undeclared key would fail halfway with its earlier writes kept.
// Errors are error replies starting with a CONTEXTD_ code and the index of
// the op, condition or lease concerned, translated by the caller
// (commitError, corruptError).

// luaCore, luaWire and luaLocks hold the helpers the scripts share. A script reports
// damage to contextd's own keys (a key of the wrong type, a field that
// does not parse) as CONTEXTD_CORRUPT <index> <role>, which the Go side
// turns into backend.ErrCorrupt naming the key; it checks before it
// writes, so a refused commit writes nothing.
//
//	roles: meta (wrong type), meta.rev, meta.epoch, meta.commit,
//	meta.parent, meta.fence, meta.ticket, data, revs, log (the change
//	log's hash), expiry (the deadline index), commit (the
//	commit's id key), revs.field (the field of condition <index>), lock
//	(lock key <index> of the script's lock keys), queue (queue key
//	<index>), waiters

// luaCore: refusals, types and the meta hash.
const luaCore = `
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
local function typeIs(key, want)
  local t = redis.call('TYPE', key)['ok']
  return t == 'none' or t == want
end
-- readMeta returns the meta fields codec, epoch, rev, commit, parent and
-- any more fields asked for, or nil and the refusal if they are damaged.
local function readMeta(meta, ...)
  local m = redis.pcall('HMGET', meta, 'codec', 'epoch', 'rev', 'commit', 'parent', ...)
  if m['err'] then return nil, failed(m, 'meta') end
  if m[2] and (#m[2] == 0 or #m[2] > 255) then return nil, corrupt('meta.epoch') end
  if m[3] and not string.match(m[3], '^%d+$') then return nil, corrupt('meta.rev') end
  if m[4] and (#m[4] > 255 or string.find(m[4], '%s')) then return nil, corrupt('meta.commit') end
  if m[5] and (#m[5] > 255 or string.find(m[5], '%s')) then return nil, corrupt('meta.parent') end
  return m, nil
end
`

// luaWire: the event wire format's pieces.
const luaWire = `
-- uvarint encodes a number as encoding/binary's AppendUvarint does.
-- Numbers below 2^21 (key and value lengths, revisions) go without a
-- table: every commit encodes several, and garbage costs each call.
local function uvarint(v)
  if v < 128 then return string.char(v) end
  if v < 16384 then return string.char(v % 128 + 128, math.floor(v / 128)) end
  if v < 2097152 then
    return string.char(v % 128 + 128, math.floor(v / 128) % 128 + 128, math.floor(v / 16384))
  end
  local b = {}
  while v >= 128 do
    b[#b + 1] = v % 128 + 128
    v = math.floor(v / 128)
  end
  b[#b + 1] = v
  return string.char(unpack(b))
end
-- wireID encodes an id as backend.AppendWireID does: lowercase hex of
-- even length in binary, anything else as it is.
-- (Only a head written by an older version needs it: its helper is made
-- when it runs, not by every call of the script.)
local function wireID(s)
  local n = #s
  if n == 0 or n % 2 == 1 or string.find(s, '[^0-9a-f]') then
    return uvarint(2 * n) .. s
  end
  return uvarint(n + 1) .. (string.gsub(s, '..', function(h) return string.char(tonumber(h, 16)) end))
end
`

// luaExpiry: reaping expired keys (the deadline index, see doc.go).
const luaExpiry = `
-- deletesEvent returns the event of a commit that deletes keys, made by
-- the store (no origin): what reaping expired keys publishes and logs.
local function deletesEvent(epochWire, rev, commitWire, parentWire, keys)
  local parts = {'\2\1' .. epochWire .. uvarint(rev) .. commitWire .. parentWire .. '\0' .. uvarint(#keys)}
  for i = 1, #keys do
    local k = keys[i]
    parts[#parts + 1] = '\1' .. uvarint(#k) .. k
  end
  return table.concat(parts)
end
-- flush runs cmd on key with args in chunks: unpack has a stack limit.
local function flush(cmd, key, args)
  for i = 1, #args, 1000 do
    redis.call(cmd, key, unpack(args, i, math.min(i + 999, #args)))
  end
end
-- serverMs returns the server's clock in milliseconds.
local function serverMs()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- publish sends payload on channel, sharded ('1') or not.
local function publish(channel, sharded, payload)
  if sharded == '1' then
    redis.call('SPUBLISH', channel, payload)
  else
    redis.call('PUBLISH', channel, payload)
  end
end
-- reap writes the commit rev that deletes the keys due (read from the
-- index): its event in the change log (the first write, so a log of the
-- wrong type refuses the commit before anything is written: it returns
-- the refusal) and on channel, and the keys gone from data, revs and the
-- index.
local function reap(ring, data, revs, index, due, epochWire, rev, commitWire, parentWire, logLen, channel, sharded)
  local payload = deletesEvent(epochWire, rev, commitWire, parentWire, due)
  if logLen > 0 then
    local ok = redis.pcall('HSET', ring, rev % logLen, payload)
    if type(ok) == 'table' then return failed(ok, 'log') end
  end
  if channel ~= '' then publish(channel, sharded, payload) end
  flush('HDEL', data, due)
  flush('HDEL', revs, due)
  flush('ZREM', index, due)
  return nil
end
`

// luaLocks: locks and the fair lock queues. (The commit script makes
// these helpers only when a commit needs them; counterFailed lives here
// for that reason, though it is not about locks.)
const luaLocks = `
-- counterFailed is failed for HINCRBY of a counter field of meta, which
-- also fails when the field does not hold an integer.
local function counterFailed(res, field)
  if string.find(res['err'], 'WRONGTYPE', 1, true) then return corrupt('meta') end
  if string.find(res['err'], 'not an integer', 1, true) then return corrupt('meta.' .. field) end
  return redis.error_reply(res['err'])
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
-- wake tells the waiters of key that they may try again: waiter next,
-- whose turn it is (the live waiter first in the key's queue), or every
-- waiter when next is false or '' (none queued, or no queues). The
-- payload is the key, or "\0<length of next>:<next><key>" when a waiter
-- is named or the key itself starts with "\0" (so that no key is taken
-- for the named form). A commit that hands the turn on to a named waiter
-- also gives its revision, rev: "\0=<rev>:<length of next>:<next><key>",
-- so that the waiter can wait for its copy to have that commit before it
-- tries (an older reader takes this form for one it does not know, and
-- wakes every waiter). Watchers of a turn (WatchTurn) other than next
-- ignore it; watchers of any release (WatchRelease) do not.
local function wake(channel, sharded, key, next, rev)
  if channel == '' then return end
  local payload = key
  if (next and next ~= '') or string.byte(key, 1) == 0 then
    next = next or ''
    payload = '\0' .. #next .. ':' .. next .. key
    if rev and next ~= '' then
      payload = '\0=' .. string.format('%d', rev) .. ':' .. string.sub(payload, 2)
    end
  end
  if sharded == '1' then
    redis.call('SPUBLISH', channel, payload)
  else
    redis.call('PUBLISH', channel, payload)
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

// commitScript checks and applies a batch, records its event in the change
// log and publishes it.
//
//	KEYS: meta, data, revs, ring (the change log), waiters, expiry (the
//	      deadline index), then (if lock checks) the lock key of each op, then (if fair) the queue key
//	      of each op, then the lock key of each lease, then (if remember)
//	      the commit's id key
//	ARGV: "<#ops> <#conditions> <#leases> <log length> <hold ms> <flags>"
//	      with flags four digits 0/1: check locks, remember (keep the
//	      commit's head under its id key for a minute), fair (queues),
//	      sharded (SPUBLISH); codec; commit id (also the epoch candidate);
//	      the commit id and the origin as the event writes them
//	      (backend.AppendWireID); channel ("" = no publish); unlock
//	      channel; waiter id ("" = none); the kind of each op, one
//	      character per op: "p" put carried by the event, "o" put whose
//	      value the event omits, "d" delete; the TTLs, "<op index> <ms>"
//	      pairs separated by spaces for each put with a TTL ("" = none);
//	      then per op: key, value ("" for a delete); per condition: key, then the revision, or "<revision>
//	      <commit id>" to check the writing commit too; per lease: key,
//	      lock value
//	returns {epoch, revision, commit id, parent commit id}, or on a
//	conflict {index of the condition, the key's value or nil, its revs
//	field ("<revision> <commit id>") or nil}
//
// Checks run in this order, and all before the batch's first write: codec,
// leases (CONTEXTD_NOTHELD), locks and queues (CONTEXTD_LOCKED: a key
// locked by another holder, or with a live waiter queued before this one,
// when no lease of the batch covers it), conditions (the conflict reply),
// the types of the keys written. Between the locks and the conditions,
// keys whose deadline has passed are reaped by a commit of their own, a
// revision before the batch's, which a batch refused by a condition keeps:
// the refusal may have seen them gone, and a later read must not find
// them again. A refused waiter is queued on the keys concerned; a
// committed one leaves its queues and wakes the next waiter.
//
// The script is lean on purpose (docs/benchmarks.md): values travel once,
// and the event (wire format version 2, byte for byte as
// backend.EncodeEvent writes it) is built here around them; one EXISTS
// tells that every lock and queue of the ops is free, the common case,
// before any per-key look; the change log is a hash of revision modulo its
// length, one HSET, and meta keeps the epoch and commit id in their wire
// form (wepoch, wcommit, valid while wfor is the head's commit id) so the
// next commit need not convert them.
//
// The commit id makes a resend of the same commit (a client retrying after
// a lost reply) return the original head instead of writing again: always
// when no other commit came in between, and with remember set at any time
// within a minute — for clients that may resend what they are told
// (Backend.mayResend).
var commitScript = goredis.NewScript(commitSource)

const commitSource = luaCore + luaWire + `
-- The lock helpers are made only when a commit needs them: most do not,
-- and each closure a script makes costs every call (docs/benchmarks.md).
local lockFns
local function locks()
  if not lockFns then
` + luaLocks + `
    lockFns = {readLock = readLock, queueHead = queueHead, enqueue = enqueue,
      leave = leave, wake = wake, now = lazyNow()}
  end
  return lockFns
end
-- Likewise the expiry helpers: only a context with keys that expire
-- needs them.
local expiryFns
local function expiry()
  if not expiryFns then
` + luaExpiry + `
    expiryFns = {reap = reap, now = serverMs, flush = flush}
  end
  return expiryFns
end
` + commitLua

const commitLua = `
local meta, data, revs, ring, waiters, index = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local nOps, nConds, nLeases, logLen, hold, fCheck, fRemember, fFair, sharded =
  string.match(ARGV[1], '^(%d+) (%d+) (%d+) (%d+) (%d+) ([01])([01])([01])([01])$')
nOps, nConds, nLeases = tonumber(nOps), tonumber(nConds), tonumber(nLeases)
logLen, hold = tonumber(logLen), tonumber(hold)
local checkLocks, remember, fair = fCheck == '1', fRemember == '1', fFair == '1'
local codec, commitID, commitWire, originWire = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local channel, unlock, waiterID, kinds, ttls = ARGV[6], ARGV[7], ARGV[8], ARGV[9], ARGV[10]
local requeueHold, requeueID = string.match(ARGV[11], '^(%d+) (.+)$')
local opsAt = 12
local condsAt = opsAt + 2 * nOps
local leasesAt = condsAt + 2 * nConds
local lockKeysAt, queueKeysAt, leaseKeysAt = 7, 7, 7
if checkLocks then
  queueKeysAt = lockKeysAt + nOps
  leaseKeysAt = queueKeysAt
  if fair then leaseKeysAt = queueKeysAt + nOps end
end

local m, bad = readMeta(meta, 'wepoch', 'wcommit', 'wfor', 'expiring')
if bad then return bad end
local storedCodec, epoch = m[1], m[2]
-- listed: meta says the deadline index may hold keys (doc.go).
local listed = m[9] ~= false
local resent -- the reply to a resend of a commit made already
if m[4] == commitID and epoch then
  resent = {epoch, tonumber(m[3]), commitID, m[5] or ''}
elseif remember then
  local seen = redis.pcall('GET', KEYS[leaseKeysAt + nLeases])
  if type(seen) == 'table' then return failed(seen, 'commit') end
  if seen then
    local e, r, p = string.match(seen, '^(%S+) (%d+) (%S*)$')
    if not e then return corrupt('commit') end
    resent = {e, tonumber(r), commitID, p}
  end
end
if resent then
  -- The first run may have queued the requeue waiter (below): the
  -- writer must learn so from this reply too, or it would never leave.
  if requeueID and fair and checkLocks then
    for i = 0, nOps - 1 do
      local s = redis.pcall('ZSCORE', KEYS[queueKeysAt + i], requeueID)
      if s and type(s) ~= 'table' then
        resent[5] = 1
        break
      end
    end
  end
  return resent
end
local parent = m[4] or ''
if not epoch then parent = '' end
if storedCodec and codec ~= '' and storedCodec ~= codec then
  return redis.error_reply('CONTEXTD_CODEC 0 ' .. storedCodec)
end
local tokens, leased = {}, {}
for i = 0, nLeases - 1 do
  local tok = ARGV[leasesAt + 2 * i + 1]
  local held, lockBad = locks().readLock(KEYS[leaseKeysAt + i], nOps + i)
  if lockBad then return lockBad end
  if held ~= tok then
    return redis.error_reply('CONTEXTD_NOTHELD ' .. i)
  end
  tokens[tok] = true
  leased[ARGV[leasesAt + 2 * i]] = true
end
local queued = waiterID ~= '' and fair
local first -- ops whose queue this waiter is first in (set when a lock or queue key of an op exists)
if checkLocks then
  -- No lock or queue key of any op exists: every key is free, and none
  -- of them needs a closer look.
  local last = leaseKeysAt - 1
  local busy = 0
  for i = lockKeysAt, last, 1000 do
    busy = busy + redis.call('EXISTS', unpack(KEYS, i, math.min(i + 999, last)))
    if busy > 0 then break end
  end
  local blocked
  if busy > 0 then
    local L = locks()
    first = {}
    for i = 0, nOps - 1 do
      if not leased[ARGV[opsAt + 2 * i]] then
        local holder, lockBad = L.readLock(KEYS[lockKeysAt + i], i)
        if lockBad then return lockBad end
        local wait = holder and not tokens[holder]
        if not wait and fair then
          local head, qBad = L.queueHead(KEYS[queueKeysAt + i], waiters, L.now, i)
          if qBad then return qBad end
          wait = head and head ~= waiterID
          first[i] = head and head == waiterID
        end
        if wait then
          if queued then
            local bad = L.enqueue(KEYS[queueKeysAt + i], waiters, meta, waiterID, L.now, hold)
            if bad then return bad end
          end
          blocked = blocked or i
        end
      end
    end
  end
  if blocked then return redis.error_reply('CONTEXTD_LOCKED ' .. blocked) end
end
-- The deadline index is read when it may hold keys or the batch puts
-- keys with a TTL; a context without expiring keys pays nothing. The read
-- also checks its type, before anything is written. Keys due by the
-- server's clock are gone for the batch: reaped below, before it.
local useIndex = listed or ttls ~= ''
local now, due
if useIndex then
  now = expiry().now()
  local d = redis.pcall('ZRANGE', index, '-inf', now, 'BYSCORE')
  if d['err'] then return failed(d, 'expiry') end
  if #d > 0 then due = d end
end

local fresh = not epoch
local rev = 1
local epochWire, parentWire
if fresh then
  epoch, epochWire, parentWire = commitID, commitWire, '\0'
else
  rev = tonumber(m[3] or '0') + 1
  if m[8] == parent and m[6] and m[7] then
    epochWire, parentWire = m[6], m[7]
  else
    -- The head was written by an older version: convert.
    epochWire, parentWire = wireID(epoch), wireID(parent)
  end
end

-- Expired keys go first, in a commit of their own (no origin; its id is
-- the batch's with an "x", which no other commit id has: those are hex of
-- even length), before the conditions: the batch sees them gone, as every
-- reader will, and a batch that a condition then refuses keeps the reap
-- (it may have seen them gone; a later read must not find them again).
-- So meta records the reap as the head; the batch's revision follows.
if due then
  if not typeIs(data, 'hash') then return corrupt('data') end
  if not typeIs(revs, 'hash') then return corrupt('revs') end
  local reapID = commitID .. 'x'
  local reapWire = wireID(reapID)
  local reapBad = expiry().reap(ring, data, revs, index, due, epochWire, rev, reapWire, parentWire, logLen, channel, sharded)
  if reapBad then return reapBad end
  local metaSet = {'rev', rev, 'commit', reapID, 'parent', parent,
    'wepoch', epochWire, 'wcommit', reapWire, 'wfor', reapID}
  if fresh then
    metaSet[#metaSet + 1] = 'epoch'
    metaSet[#metaSet + 1] = epoch
  end
  redis.call('HSET', meta, unpack(metaSet))
  parent, parentWire, rev = reapID, reapWire, rev + 1
end
-- revs holds "<revision> <commit id>" per key ("<revision>" if written
-- by an older version); a condition without a commit id compares only the
-- revision. A field that is neither, or a value without a revision (or
-- the reverse), is damage, not a conflict: retrying could never meet the
-- condition.
for i = 0, nConds - 1 do
  local key, want = ARGV[condsAt + 2 * i], ARGV[condsAt + 2 * i + 1]
  local field = redis.pcall('HGET', revs, key)
  if type(field) == 'table' then return failed(field, 'revs') end
  if field and not string.match(field, '^%d+ %S+$') and not string.match(field, '^%d+$') then
    return corrupt('revs.field', i)
  end
  local value = redis.pcall('HGET', data, key)
  if type(value) == 'table' then return failed(value, 'data') end
  if (value ~= false) ~= (field ~= false) then return corrupt('revs.field', i) end
  local have = field or '0'
  if not string.find(want, ' ', 1, true) then
    have = string.match(have, '^%S*')
  end
  if have ~= want then
    -- The writer lost a race: keep its place for the retry.
    if queued and checkLocks then
      local L = locks()
      for j = 0, nOps - 1 do
        if not leased[ARGV[opsAt + 2 * j]] then
          local bad = L.enqueue(KEYS[queueKeysAt + j], waiters, meta, waiterID, L.now, hold)
          if bad then return bad end
        end
      end
    end
    -- What the key holds now, so the writer need not read it again.
    return {i, value, field}
  end
end
-- Every key written below must be of its type, or the script would stop
-- halfway with its earlier writes kept; the change log is checked by its
-- write, the first.
if not typeIs(data, 'hash') then return corrupt('data') end
if not typeIs(revs, 'hash') then return corrupt('revs') end

-- The batch's deadlines: a put with a TTL sets its key's, any other op
-- drops its key's (when the index may hold it).
local adds, rems
local ttlOf = {}
if useIndex then
  for i, ms in string.gmatch(ttls, '(%d+) (%d+)') do ttlOf[tonumber(i)] = tonumber(ms) end
  adds, rems = {}, {}
  for i = 0, nOps - 1 do
    local ms = ttlOf[i]
    if ms then
      adds[#adds + 1] = now + ms
      adds[#adds + 1] = ARGV[opsAt + 2 * i]
    elseif listed then
      rems[#rems + 1] = ARGV[opsAt + 2 * i]
    end
  end
end
local flagIndex = adds and #adds > 0 and not listed

-- The event, as backend.EncodeEvent writes version 2.
local putRev = rev .. ' ' .. commitID
local header = '\2\1' .. epochWire .. uvarint(rev) .. commitWire .. parentWire .. originWire .. uvarint(nOps)
local payload
local k1, v1 = ARGV[opsAt], ARGV[opsAt + 1]
local kind1 = string.byte(kinds, 1)
if nOps == 1 and kind1 == 112 and ttls == '' then -- one put: the common case
  payload = header .. '\0' .. uvarint(#k1) .. k1 .. uvarint(#v1) .. v1
else
  local parts = {header}
  for i = 0, nOps - 1 do
    local k, v = ARGV[opsAt + 2 * i], ARGV[opsAt + 2 * i + 1]
    local kind = string.byte(kinds, i + 1)
    -- A put with a TTL adds flag 4 and its deadline after the value.
    local ms = ttlOf[i]
    if kind == 112 then -- 'p'
      if ms then
        parts[#parts + 1] = '\4' .. uvarint(#k) .. k .. uvarint(#v) .. v .. uvarint(now + ms)
      else
        parts[#parts + 1] = '\0' .. uvarint(#k) .. k .. uvarint(#v) .. v
      end
    elseif kind == 111 then -- 'o'
      if ms then
        parts[#parts + 1] = '\6' .. uvarint(#k) .. k .. uvarint(now + ms)
      else
        parts[#parts + 1] = '\2' .. uvarint(#k) .. k
      end
    else -- 'd'
      parts[#parts + 1] = '\1' .. uvarint(#k) .. k
    end
  end
  payload = table.concat(parts)
end

if logLen > 0 then
  local ok = redis.pcall('HSET', ring, rev % logLen, payload)
  if type(ok) == 'table' then return failed(ok, 'log') end
end
-- One HSET records the new revision, the commit and its parent, their
-- wire forms and, for a context without them, the epoch and codec.
if not fresh and (storedCodec or codec == '') and not flagIndex then
  redis.call('HSET', meta, 'rev', rev, 'commit', commitID, 'parent', parent,
    'wepoch', epochWire, 'wcommit', commitWire, 'wfor', commitID)
else
  local metaSet = {'rev', rev, 'commit', commitID, 'parent', parent,
    'wepoch', epochWire, 'wcommit', commitWire, 'wfor', commitID}
  if fresh then
    metaSet[#metaSet + 1] = 'epoch'
    metaSet[#metaSet + 1] = epoch
  end
  if not storedCodec and codec ~= '' then
    metaSet[#metaSet + 1] = 'codec'
    metaSet[#metaSet + 1] = codec
  end
  if flagIndex then
    metaSet[#metaSet + 1] = 'expiring'
    metaSet[#metaSet + 1] = '1'
  end
  redis.call('HSET', meta, unpack(metaSet))
end
if nOps == 1 and kind1 ~= 100 then
  redis.call('HSET', data, k1, v1)
  redis.call('HSET', revs, k1, putRev)
elseif nOps == 1 then
  redis.call('HDEL', data, k1)
  redis.call('HDEL', revs, k1)
else
  -- unpack has a stack limit, so large batches go in chunks.
  local function flush(cmd, key, args)
    local chunk = 1000
    for i = 1, #args, chunk do
      redis.call(cmd, key, unpack(args, i, math.min(i + chunk - 1, #args)))
    end
  end
  local puts, putRevs, dels = {}, {}, {}
  for i = 0, nOps - 1 do
    local k = ARGV[opsAt + 2 * i]
    if string.byte(kinds, i + 1) == 100 then
      dels[#dels + 1] = k
    else
      puts[#puts + 1] = k
      puts[#puts + 1] = ARGV[opsAt + 2 * i + 1]
      putRevs[#putRevs + 1] = k
      putRevs[#putRevs + 1] = putRev
    end
  end
  flush('HSET', data, puts)
  flush('HSET', revs, putRevs)
  flush('HDEL', data, dels)
  flush('HDEL', revs, dels)
end
if useIndex then
  if #adds > 0 then expiry().flush('ZADD', index, adds) end
  local removed = 0
  for i = 1, #rems, 1000 do
    removed = removed + redis.call('ZREM', index, unpack(rems, i, math.min(i + 999, #rems)))
  end
  -- Once the index is empty, meta says so, and writes skip it again.
  if (due or removed > 0) and #adds == 0 and redis.call('ZCARD', index) == 0 then
    redis.call('HDEL', meta, 'expiring')
  end
end
if channel ~= '' then
  if sharded == '1' then
    redis.call('SPUBLISH', channel, payload)
  else
    redis.call('PUBLISH', channel, payload)
  end
end
if remember then
  redis.call('SET', KEYS[leaseKeysAt + nLeases], epoch .. ' ' .. rev .. ' ' .. parent, 'PX', 60000)
end
if first and queued then
  local L = locks()
  for i = 0, nOps - 1 do
    local q = KEYS[queueKeysAt + i]
    if first[i] and L.leave(q, waiters, waiterID) then
      L.wake(unlock, sharded, ARGV[opsAt + 2 * i], (L.queueHead(q, waiters, L.now, i)), rev)
    end
  end
end
-- A requeue: the writer expects to write these keys again soon, and
-- others wait for them: it takes its next place in their queues now,
-- behind those waiters, instead of with a refused attempt later.
if requeueID and fair and first then
  local L = locks()
  local n = 0
  for i = 0, nOps - 1 do
    local q = KEYS[queueKeysAt + i]
    if redis.call('ZCARD', q) > 0 then
      local bad = L.enqueue(q, waiters, meta, requeueID, L.now, tonumber(requeueHold))
      if bad then return bad end
      n = n + 1
    end
  end
  if n > 0 then return {epoch, rev, commitID, parent, n} end
end
return {epoch, rev, commitID, parent}
`

// expireScript reaps the keys of a context whose deadline has passed by
// the server's clock, in one commit of their own, as the commit script
// does before a batch (backend.Expirer).
//
//	KEYS: meta, data, revs, ring, expiry
//	ARGV: commit id, its wire form (backend.AppendWireID), channel ("" =
//	      no publish), log length, sharded ("1": SPUBLISH)
//	returns {epoch, revision, commit id, parent commit id, the server's
//	clock in ms, the next deadline in ms (a score) or nil, the keys
//	deleted}, with revision 0 and empty ids when none was due
var expireScript = goredis.NewScript(luaCore + luaWire + luaExpiry + `
local meta, data, revs, ring, index = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local commitID, commitWire, channel, sharded = ARGV[1], ARGV[2], ARGV[3], ARGV[5]
local logLen = tonumber(ARGV[4])
local m, bad = readMeta(meta, 'wepoch', 'wcommit', 'wfor', 'expiring')
if bad then return bad end
local now = serverMs()
if not m[9] then return {'', 0, '', '', now, false, {}} end
local due = redis.pcall('ZRANGE', index, '-inf', now, 'BYSCORE')
if due['err'] then return failed(due, 'expiry') end
local epoch, rev, parent, made = m[2], 0, '', ''
if #due > 0 then
  if not typeIs(data, 'hash') then return corrupt('data') end
  if not typeIs(revs, 'hash') then return corrupt('revs') end
  local epochWire, parentWire
  if epoch then
    rev, parent = tonumber(m[3] or '0') + 1, m[4] or ''
    if m[8] == parent and m[6] and m[7] then
      epochWire, parentWire = m[6], m[7]
    else
      epochWire, parentWire = wireID(epoch), wireID(parent)
    end
  else
    epoch, epochWire, parentWire, rev = commitID, commitWire, '\0', 1
  end
  local reapBad = reap(ring, data, revs, index, due, epochWire, rev, commitWire, parentWire, logLen, channel, sharded)
  if reapBad then return reapBad end
  local metaSet = {'rev', rev, 'commit', commitID, 'parent', parent,
    'wepoch', epochWire, 'wcommit', commitWire, 'wfor', commitID}
  if not m[2] then
    metaSet[#metaSet + 1] = 'epoch'
    metaSet[#metaSet + 1] = epoch
  end
  redis.call('HSET', meta, unpack(metaSet))
  made = commitID
else
  epoch = ''
end
local first = redis.call('ZRANGE', index, 0, 0, 'WITHSCORES')
local nextAt = false
if #first == 0 then
  redis.call('HDEL', meta, 'expiring')
else
  nextAt = first[2]
end
return {epoch, rev, made, parent, now, nextAt, due}
`)

// getScript reads one entry.
//
//	KEYS: data, revs, expiry; ARGV: key
//	returns {value or nil, revision field or nil, deadline in ms (a
//	score) or nil}
var getScript = goredis.NewScript(luaCore + `
local v = redis.pcall('HGET', KEYS[1], ARGV[1])
if type(v) == 'table' then return failed(v, 'data') end
local r = redis.pcall('HGET', KEYS[2], ARGV[1])
if type(r) == 'table' then return failed(r, 'revs') end
local x = redis.pcall('ZSCORE', KEYS[3], ARGV[1])
if type(x) == 'table' then return failed(x, 'expiry') end
return {v, r, x}
`)

// getManyScript reads many entries at one moment.
//
//	KEYS: data, revs, expiry; ARGV: the keys
//	returns {values (nil where missing), revision fields (nil where
//	missing), deadlines in ms (nil where none)}, in the order of ARGV
var getManyScript = goredis.NewScript(luaCore + `
local v = redis.pcall('HMGET', KEYS[1], unpack(ARGV))
if v['err'] then return failed(v, 'data') end
local r = redis.pcall('HMGET', KEYS[2], unpack(ARGV))
if r['err'] then return failed(r, 'revs') end
local x = redis.pcall('ZMSCORE', KEYS[3], unpack(ARGV))
if x['err'] then return failed(x, 'expiry') end
return {v, r, x}
`)

// changesScript reads the logged events after a revision.
//
//	KEYS: meta, ring; ARGV: after, log length
//	returns {epoch, revision, the ring's fields of revisions after+1 up
//	to revision, oldest first (nil where missing)} or, when more events
//	are missing than the log holds, {epoch, revision, false}
var changesScript = goredis.NewScript(luaCore + `
local m, bad = readMeta(KEYS[1])
if bad then return bad end
local epoch, rev = m[2] or '', tonumber(m[3] or '0')
local after, logLen = tonumber(ARGV[1]), tonumber(ARGV[2])
if rev <= after then return {epoch, rev, {}} end
if rev - after > logLen then return {epoch, rev, false} end
local out = {}
for from = after + 1, rev, 1000 do
  local fields = {}
  for r = from, math.min(from + 999, rev) do fields[#fields + 1] = r % logLen end
  local got = redis.pcall('HMGET', KEYS[2], unpack(fields))
  if got['err'] then return failed(got, 'log') end
  for j = 1, #fields do out[#out + 1] = got[j] end
end
return {epoch, rev, out}
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
var acquireScript = goredis.NewScript(luaCore + luaLocks + `
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
var dequeueScript = goredis.NewScript(luaCore + luaLocks + `
local id, unlock, sharded = ARGV[1], ARGV[2], ARGV[3]
if not typeIs(KEYS[1], 'hash') then return corrupt('waiters') end
local now = lazyNow()
local n = 0
for i = 2, #KEYS do
  local q = KEYS[i]
  local ok = redis.pcall('ZSCORE', q, id)
  if type(ok) == 'table' then return failed(ok, 'queue', i - 2) end
  if ok then
    n = n + 1
    if leave(q, KEYS[1], id) then
      wake(unlock, sharded, ARGV[i + 2], (queueHead(q, KEYS[1], now, i - 2)))
    end
  end
end
return n
`)

// releaseScript deletes a lock if the lease holds it and tells waiters:
// with queues, the live waiter first in the key's queue (whose turn it
// is), else all of them.
//
//	KEYS: lock key, then (fair) the key's queue key and waiters
//	ARGV: lock value, unlock channel ("" = none), sharded, key
//	returns 1 if released, 0 if not held
var releaseScript = goredis.NewScript(luaCore + luaLocks + `
local held, bad = readLock(KEYS[1], 0)
if bad then return bad end
if held ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
local next = false
if ARGV[2] ~= '' and #KEYS == 3 then
  -- A damaged queue wakes every waiter; the next script that reads the
  -- queue reports the damage.
  next = queueHead(KEYS[2], KEYS[3], lazyNow(), 0) or false
end
wake(ARGV[2], ARGV[3], ARGV[4], next)
return 1
`)

// extendScript resets a lock's TTL if the lease holds it.
//
//	KEYS: lock key; ARGV: lock value, ttl in ms
//	returns 1 if extended, 0 if not held
var extendScript = goredis.NewScript(luaCore + luaLocks + `
local held, bad = readLock(KEYS[1], 0)
if bad then return bad end
if held ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
`)
