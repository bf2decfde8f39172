package redis

import goredis "github.com/redis/go-redis/v9"

// The Lua scripts. Each touches only keys it is given (all under one
// context's hash tag), so it is legal in Redis Cluster; a script that
// touched an undeclared key would fail halfway with its earlier writes kept.
// Errors are error replies starting with a CONTEXTD_ code and the index of
// the op or lease concerned, translated by translate.

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
var commitScript = goredis.NewScript(`
local meta, data, revs, log = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local codec, epochNew, channel, sharded = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local logLen, body = tonumber(ARGV[5]), ARGV[6]
local nOps, nConds, nLeases = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
local checkLocks = ARGV[10] == '1'
local commitID, remember = ARGV[11], ARGV[12] == '1'
local opsAt = 13
local condsAt = opsAt + 3 * nOps
local leasesAt = condsAt + 2 * nConds

local m = redis.call('HMGET', meta, 'codec', 'epoch', 'rev', 'commit', 'parent')
local storedCodec, epoch = m[1], m[2]
if m[4] == commitID and epoch then
  return {epoch, tonumber(m[3]), commitID, m[5] or ''}
end
if remember then
  local seen = redis.call('GET', KEYS[5])
  if seen then
    local e, r, p = string.match(seen, '^(%S+) (%d+) (%S*)$')
    return {e, tonumber(r), commitID, p}
  end
end
local parent = m[4] or ''
if not epoch then parent = '' end
if storedCodec and codec ~= '' and storedCodec ~= codec then
  return redis.error_reply('CONTEXTD_CODEC 0 ' .. storedCodec)
end
-- revs holds "<revision> <commit id>" per key ("<revision>" if written
-- by another program); a condition without a commit id compares only the
-- revision.
for i = 0, nConds - 1 do
  local have = redis.call('HGET', revs, ARGV[condsAt + 2 * i]) or '0'
  local want = ARGV[condsAt + 2 * i + 1]
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
  if redis.call('GET', KEYS[leaseKeysAt + i]) ~= tok then
    return redis.error_reply('CONTEXTD_NOTHELD ' .. i)
  end
  tokens[tok] = true
end
if checkLocks then
  for i = 0, nOps - 1 do
    local holder = redis.call('GET', KEYS[lockKeysAt + i])
    if holder and not tokens[holder] then
      return redis.error_reply('CONTEXTD_LOCKED ' .. i)
    end
  end
end

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
var loadScript = goredis.NewScript(`
local m = redis.call('HMGET', KEYS[1], 'epoch', 'rev', 'codec', 'commit', 'parent')
return {m[1] or '', m[2] or '0', m[3] or '', redis.call('HGETALL', KEYS[2]), redis.call('HGETALL', KEYS[3]), m[4] or '', m[5] or ''}
`)

// getScript reads one entry.
//
//	KEYS: data, revs; ARGV: key
//	returns {value or nil, revision or nil}
var getScript = goredis.NewScript(`
return {redis.call('HGET', KEYS[1], ARGV[1]), redis.call('HGET', KEYS[2], ARGV[1])}
`)

// changesScript reads the newest events of the log, enough to reach back
// to a revision.
//
//	KEYS: meta, log; ARGV: after, most events to return
//	returns {epoch, revision, entries newest first} or, when more events
//	than allowed are missing, {epoch, revision, false}
var changesScript = goredis.NewScript(`
local m = redis.call('HMGET', KEYS[1], 'epoch', 'rev')
local epoch, rev = m[1] or '', tonumber(m[2] or '0')
local n = rev - tonumber(ARGV[1])
if n <= 0 then return {epoch, rev, {}} end
if n > tonumber(ARGV[2]) then return {epoch, rev, false} end
return {epoch, rev, redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', n)}
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
var acquireScript = goredis.NewScript(`
local held = redis.call('GET', KEYS[1])
if held then
  local token, fence = string.match(held, '^(.*):(%d+)$')
  if token == ARGV[1] then return tonumber(fence) end
  return false
end
local fence = redis.call('HINCRBY', KEYS[2], 'fence', 1)
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
var releaseScript = goredis.NewScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
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
var extendScript = goredis.NewScript(`
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
`)
