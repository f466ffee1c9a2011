package cluster

import "github.com/redis/go-redis/v9"

// scriptCount counts events of one counter: INCRBY their number
// (ARGV[2]), and the window's expiry (ARGV[1], ms) set at the first event
// (or on a key found without one). A wrong password's fingerprint
// (ARGV[3], "0" for none) already in the counter's set (KEYS[2], expiring
// with the counter) is not counted again: -1. It returns the count; the
// caller whose increment takes the count from below the threshold to it or
// above makes the block.
var scriptCount = redis.NewScript(`
if ARGV[3] ~= '0' and redis.call('SADD', KEYS[2], ARGV[3]) == 0 then
  return -1
end
local n = redis.call('INCRBY', KEYS[1], ARGV[2])
if n == tonumber(ARGV[2]) or redis.call('PTTL', KEYS[1]) == -1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
if ARGV[3] ~= '0' then
  redis.call('PEXPIRE', KEYS[2], redis.call('PTTL', KEYS[1]))
end
return n
`)

// scriptPut stores blocks and announces them.
// KEYS: stream, index, escalation index, escalation key (of the first
// block), one block key per block.
// ARGV: maxlen, node, actor, auto, now (ms), data, escalation value,
// escalation expiry (ms, 0: none), then per block: value, expires (ms, 0:
// never), index member.
// An automatic block (auto = 1, one block) whose key already exists (an
// active block of the prefix made by any node) is neither stored nor
// announced: one crossing makes one block. An automatic block that is
// stored also sets the prefix's escalation memory (its level and time,
// "level ms"), kept until the escalation expiry and listed in the
// escalation index by it. It returns 1 if announced.
var scriptPut = redis.NewScript(`
local n = #KEYS - 4
if ARGV[4] == '1' and n == 1 and redis.call('EXISTS', KEYS[5]) == 1 then
  return 0
end
local now = tonumber(ARGV[5])
for i = 1, n do
  local j = 8 + (i - 1) * 3
  local x = tonumber(ARGV[j + 2])
  if x == 0 then
    redis.call('SET', KEYS[4 + i], ARGV[j + 1])
    redis.call('ZADD', KEYS[2], '+inf', ARGV[j + 3])
  elseif x > now then
    redis.call('SET', KEYS[4 + i], ARGV[j + 1], 'PXAT', x)
    redis.call('ZADD', KEYS[2], x, ARGV[j + 3])
  end
end
local m = tonumber(ARGV[8])
if ARGV[4] == '1' and n == 1 and m > now then
  redis.call('SET', KEYS[4], ARGV[7], 'PXAT', m)
  redis.call('ZADD', KEYS[3], m, ARGV[11])
end
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'op', 'put', 'node', ARGV[2], 'actor', ARGV[3], 'auto', ARGV[4], 'data', ARGV[6])
return 1
`)

// scriptDel removes blocks and announces it, leaving a tombstone for
// each: "ms" (the time of the unblock), kept as long as the block would
// have lasted (the fallback, ms, for a block Redis did not hold or one
// that never expires), so a node that made the block and missed this
// entry drops its copy at reconcile instead of announcing it again.
// KEYS: stream, index, one block key per prefix, then one tombstone key
// per prefix.
// ARGV: maxlen, node, actor, auto, data, now (ms), fallback (ms), then
// the index members.
var scriptDel = redis.NewScript(`
local n = (#KEYS - 2) / 2
for i = 1, n do
  local ttl = redis.call('PTTL', KEYS[2 + i])
  if ttl <= 0 then ttl = tonumber(ARGV[7]) end
  redis.call('SET', KEYS[2 + n + i], ARGV[6], 'PX', ttl)
  redis.call('DEL', KEYS[2 + i])
  redis.call('ZREM', KEYS[2], ARGV[7 + i])
end
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'op', 'del', 'node', ARGV[2], 'actor', ARGV[3], 'data', ARGV[5])
return 1
`)

// scriptDelAll removes every block and announces it, leaving a tombstone
// for each block in the index (as scriptDel) and one for all blocks
// (KEYS[3], for the fallback).
// KEYS: stream, index, all-blocks tombstone. ARGV: maxlen, node, actor,
// auto, block key prefix, tombstone key prefix, now (ms), fallback (ms).
var scriptDelAll = redis.NewScript(`
local m = redis.call('ZRANGE', KEYS[2], 0, -1)
for _, p in ipairs(m) do
  local ttl = redis.call('PTTL', ARGV[5] .. p)
  if ttl <= 0 then ttl = tonumber(ARGV[8]) end
  redis.call('SET', ARGV[6] .. p, ARGV[7], 'PX', ttl)
  redis.call('DEL', ARGV[5] .. p)
end
redis.call('SET', KEYS[3], ARGV[7], 'PX', ARGV[8])
redis.call('DEL', KEYS[2])
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'op', 'delall', 'node', ARGV[2], 'actor', ARGV[3])
return #m
`)

// scriptPurge removes blocks expired at or before a time and announces
// it. KEYS: stream, index. ARGV: maxlen, node, actor, auto, before (ms),
// block key prefix.
var scriptPurge = redis.NewScript(`
local m = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[5])
for _, p in ipairs(m) do
  redis.call('DEL', ARGV[6] .. p)
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[5])
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'op', 'purge', 'node', ARGV[2], 'actor', ARGV[3], 'data', ARGV[5])
return #m
`)

var allScripts = []*redis.Script{scriptCount, scriptPut, scriptDel, scriptDelAll, scriptPurge}
