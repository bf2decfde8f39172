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
//	meta.parent, meta.fence, data, revs, log, commit (the commit's id
//	key), revs.field (the field of condition <index>), lock (lock key
//	<index> of the script's lock keys)
const luaPrelude = `
local function corrupt(role, i)
  return redis.error_reply('CONTEXTD_CORRUPT ' .. (i or 0) .. ' ' .. role)
end
local function typeIs(key, want)
  local t = redis.call('TYPE', key)['ok']
  return t == 'none' or t == want
end
-- readMeta returns the meta fields codec, epoch, rev, commit, parent, or
-- nil and the refusal if they are damaged.
local function readMeta(meta)
  local m = redis.pcall('HMGET', meta, 'codec', 'epoch', 'rev', 'commit', 'parent')
  if m['err'] then return nil, corrupt('meta') end
  if m[2] and (#m[2] == 0 or #m[2] > 255) then return nil, corrupt('meta.epoch') end
  if m[3] and not string.match(m[3], '^%d+$') then return nil, corrupt('meta.rev') end
  if m[4] and (#m[4] > 255 or string.find(m[4], '%s')) then return nil, corrupt('meta.commit') end
  if m[5] and (#m[5] > 255 or string.find(m[5], '%s')) then return nil, corrupt('meta.parent') end
  return m, nil
end
-- readLock returns a lock key's value "<token>:<fence>" (false when free),
-- or nil and the refusal if the key is damaged; i is its index for the
-- refusal.
local function readLock(key, i)
  local v = redis.pcall('GET', key)
  if type(v) == 'table' then return nil, corrupt('lock', i) end
  if v and not string.match(v, '^.+:%d+$') then return nil, corrupt('lock', i) end
  return v, nil
end
`

// commitScript checks and applies a batch, appends its event to the change
// log and publishes it.
//
//	KEYS: meta, data, revs, log, the commit's id key, then (if lock checks)
//	      the lock key of each op, then the lock key of each lease
//	ARGV: codec, epoch candidate, channel ("" = no publish), sharded
//	      ("1" = SPUBLISH), log length ("0" = no log), event body, #ops,
//	      #conditions, #leases, check locks ("1"), commit id, remember ("1":
//	      keep the commit's head under its id key for a minute), then per
//	      op: key, "p"|"d", value; per condition: key, then the revision,
//	      or "<revision> <commit id>" to check the writing commit too; per
//	      lease: key, lock value
//	returns {epoch, revision, commit id, parent commit id}
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
local opsAt = 13
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
  if type(seen) == 'table' then return corrupt('commit') end
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
-- revs holds "<revision> <commit id>" per key ("<revision>" if written
-- by an older version); a condition without a commit id compares only the
-- revision. A field that is neither, or a value without a revision where
-- the condition wants the key absent, is damage, not a conflict: retrying
-- could never meet the condition.
for i = 0, nConds - 1 do
  local key, want = ARGV[condsAt + 2 * i], ARGV[condsAt + 2 * i + 1]
  local have = redis.pcall('HGET', revs, key)
  if type(have) == 'table' then return corrupt('revs') end
  if have and not string.match(have, '^%d+ %S+$') and not string.match(have, '^%d+$') then
    return corrupt('revs.field', i)
  end
  -- A value without a revision, or a revision without a value.
  local exists = redis.pcall('HEXISTS', data, key)
  if type(exists) == 'table' then return corrupt('data') end
  if (exists == 1) ~= (have ~= false) then return corrupt('revs.field', i) end
  have = have or '0'
  if not string.find(want, ' ', 1, true) then
    have = string.match(have, '^%S*')
  end
  if have ~= want then
    return redis.error_reply('CONTEXTD_CONFLICT ' .. i)
  end
end
local lockKeysAt = 6
local leaseKeysAt = lockKeysAt
if checkLocks then leaseKeysAt = lockKeysAt + nOps end
local tokens = {}
for i = 0, nLeases - 1 do
  local tok = ARGV[leasesAt + 2 * i + 1]
  local held, lockBad = readLock(KEYS[leaseKeysAt + i], leaseKeysAt + i - lockKeysAt)
  if lockBad then return lockBad end
  if held ~= tok then
    return redis.error_reply('CONTEXTD_NOTHELD ' .. i)
  end
  tokens[tok] = true
end
if checkLocks then
  for i = 0, nOps - 1 do
    local holder, lockBad = readLock(KEYS[lockKeysAt + i], i)
    if lockBad then return lockBad end
    if holder and not tokens[holder] then
      return redis.error_reply('CONTEXTD_LOCKED ' .. i)
    end
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
return {epoch, rev, commitID, parent}
`)

// loadScript reads a consistent snapshot.
//
//	KEYS: meta, data, revs
//	returns {epoch, revision, codec, HGETALL data, HGETALL revs, commit,
//	parent}
var loadScript = goredis.NewScript(luaPrelude + `
local m, bad = readMeta(KEYS[1])
if bad then return bad end
local d = redis.pcall('HGETALL', KEYS[2])
if d['err'] then return corrupt('data') end
local r = redis.pcall('HGETALL', KEYS[3])
if r['err'] then return corrupt('revs') end
return {m[2] or '', m[3] or '0', m[1] or '', d, r, m[4] or '', m[5] or ''}
`)

// getScript reads one entry.
//
//	KEYS: data, revs; ARGV: key
//	returns {value or nil, revision field or nil}
var getScript = goredis.NewScript(luaPrelude + `
local v = redis.pcall('HGET', KEYS[1], ARGV[1])
if type(v) == 'table' then return corrupt('data') end
local r = redis.pcall('HGET', KEYS[2], ARGV[1])
if type(r) == 'table' then return corrupt('revs') end
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
if entries['err'] then return corrupt('log') end
return {epoch, rev, entries}
`)

// acquireScript takes a lock and draws its fencing token. The lock's value
// is "<token>:<fence>", so a resend of an acquisition whose reply was lost
// finds its own token and returns the same fence instead of failing.
//
//	KEYS: lock key, meta; ARGV: token, ttl in ms
//	returns the fencing token, or nil when another holder has the lock
//
// A counter that is missing (the data was lost) starts again from the
// server's clock in microseconds, above every token drawn before as long
// as the clock did not go back, rather than from 1.
var acquireScript = goredis.NewScript(luaPrelude + `
local held, bad = readLock(KEYS[1], 0)
if bad then return bad end
if held then
  local token, fence = string.match(held, '^(.*):(%d+)$')
  if token == ARGV[1] then return tonumber(fence) end
  return false
end
local fence = redis.pcall('HINCRBY', KEYS[2], 'fence', 1)
if type(fence) == 'table' then
  if string.find(fence['err'], 'WRONGTYPE', 1, true) then return corrupt('meta') end
  return corrupt('meta.fence')
end
if fence == 1 then
  local t = redis.call('TIME')
  fence = tonumber(t[1]) * 1000000 + tonumber(t[2])
  redis.call('HSET', KEYS[2], 'fence', fence)
end
redis.call('SET', KEYS[1], ARGV[1] .. ':' .. string.format('%d', fence), 'PX', ARGV[2])
return fence
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
