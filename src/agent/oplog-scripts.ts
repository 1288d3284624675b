// The Lua scripts behind the operation log, and the runner that sends them.
//
// They must mean the same on redis-server (Lua 5.1) and on Dragonfly (Lua
// 5.4), so they follow four rules:
// - Integers only. In 5.4 `/` yields a float, a float handed to redis.call
//   becomes "250.0", and a returned float is not cut to an integer. Counts are
//   passed in ARGV instead of divided out, every number read is passed through
//   int() (math.floor returns an integer in 5.4), and every number written is
//   formatted with %d.
// - Errors carry an explicit code as their first word (Dragonfly does not add
//   "ERR" to redis.error_reply text), so a caller can tell them apart by code.
// - Nothing matches on error text: pcall error strings differ between servers.
// - Every key touched is named in KEYS, all under the cluster's hash tag
//   (Dragonfly locks the declared keys; see src/lib/keys.ts).
// test/unit/lua-scripts.test.ts checks each script's syntax with luac5.1 and
// luac5.4 and runs them under both interpreters against an in-memory stand-in.
import type { RespClient } from '../lib/resp/client.ts';

/** Error code: the arguments do not have the shape the script expects; nothing was written. */
export const LUA_ERR_BAD_ARGS = 'HSBADARGS';
/** Error code: an XADD failed after earlier entries of the batch were written; the head covers only those. */
export const LUA_ERR_PARTIAL = 'HSPARTIAL';

const PRELUDE = `
local function int(v) return math.floor(tonumber(v) or 0) end
local function fmt(v) return string.format('%d', v) end
`;

// KEYS: epoch, head, log, batch [, stage]
// ARGV: writerEpoch, maxLength, batchMemoryMs, count, minHead, then op, key, payload, crc per entry
//       (or, with a stage key, the 4*count fields in the stage list instead; the list is deleted).
//       minHead: the highest seq this writer already saw written in its epoch.
// Returns {first, last}; {0, currentEpoch} when fenced (currentEpoch 0: no epoch
// stored, the server was wiped); {-2, head} when the stored head is below
// minHead (the server came back from an older copy: appending would hand out
// sequence numbers a second time); {-1, message} when the first XADD failed
// (nothing written).
export const APPEND_LUA = `${PRELUDE}
local staged = #KEYS == 5
local function drop() if staged then redis.call('DEL', KEYS[5]) end end
local cur = redis.call('GET', KEYS[1])
if not cur then drop() return {0, 0} end
if int(cur) ~= int(ARGV[1]) then drop() return {0, int(cur)} end
local n = int(ARGV[4])
local have = 0
if staged then have = redis.call('LLEN', KEYS[5]) else have = #ARGV - 5 end
if n < 1 or have ~= 4 * n then
  drop()
  return redis.error_reply(string.format('${LUA_ERR_BAD_ARGS} append of %d entries needs %d fields, got %d', n, 4 * n, have))
end
local head = int(redis.call('GET', KEYS[2]))
if head < int(ARGV[5]) then drop() return {-2, head} end
local s = head
local function add(f, j)
  s = s + 1
  local r = redis.pcall('XADD', KEYS[3], fmt(s) .. '-0', 'e', ARGV[1], 'o', f[j], 'k', f[j + 1], 'p', f[j + 2], 'c', f[j + 3])
  if type(r) == 'table' and r.err then return r.err end
  return nil
end
local failed = nil
if staged then
  local window = 4096
  local from = 0
  while failed == nil and from < 4 * n do
    local part = redis.call('LRANGE', KEYS[5], fmt(from), fmt(from + window - 1))
    if #part == 0 then break end
    for j = 1, #part, 4 do
      failed = add(part, j)
      if failed then break end
    end
    from = from + #part
  end
  drop()
else
  for j = 6, #ARGV, 4 do
    failed = add(ARGV, j)
    if failed then break end
  end
end
if failed then
  if s == head + 1 then return {-1, failed} end
  redis.call('SET', KEYS[2], fmt(s - 1))
  return redis.error_reply(string.format('${LUA_ERR_PARTIAL} append stopped after seq %d: %s', s - 1, failed))
end
redis.call('SET', KEYS[2], fmt(s))
redis.call('XTRIM', KEYS[3], 'MAXLEN', '~', ARGV[2])
redis.call('SET', KEYS[4], string.format('%d-%d', head + 1, s), 'PX', ARGV[3])
return {head + 1, s}
`;

// KEYS: epoch, head, log, epochs   ARGV: epoch, minHead.
// Never lowers the epoch. The head becomes the highest of: the stored head, the
// stream's last entry, and minHead (what the new leader already applied), so a
// sequence number is never handed out twice even after the server lost data.
// Returns {epoch, head}, or {0, currentEpoch} when a newer epoch is stored.
export const RAISE_EPOCH_LUA = `${PRELUDE}
local e = int(ARGV[1])
local minHead = int(ARGV[2])
if e < 1 or minHead < 0 then
  return redis.error_reply(string.format('${LUA_ERR_BAD_ARGS} epoch must be >= 1 and minHead >= 0, got %d and %d', e, minHead))
end
local cur = int(redis.call('GET', KEYS[1]))
if cur > e then return {0, cur} end
local head = int(redis.call('GET', KEYS[2]))
local last = redis.call('XREVRANGE', KEYS[3], '+', '-', 'COUNT', '1')
if #last > 0 then
  local s = int(string.match(last[1][1], '^(%d+)'))
  if s > head then head = s end
end
if minHead > head then head = minHead end
redis.call('SET', KEYS[1], fmt(e))
redis.call('SET', KEYS[2], fmt(head))
redis.call('HSETNX', KEYS[4], fmt(e), fmt(head))
return {e, int(redis.call('HGET', KEYS[4], fmt(e)))}
`;

/** Every script, by name, for the syntax and portability checks. */
export const LUA_SCRIPTS: Readonly<Record<string, string>> = { append: APPEND_LUA, raiseEpoch: RAISE_EPOCH_LUA };

/** The error code of a server error reply: its first word ("NOSCRIPT", "HSPARTIAL", ...). */
export function replyErrorCode(err: unknown): string | undefined {
  if (!(err instanceof Error) || err.name !== 'ReplyError') return undefined;
  return /^[A-Z][A-Z_-]*/.exec(err.message)?.[0];
}

/** Runs a Lua script by its SHA, loading it the first time the server does not know it. */
export class LuaScript {
  private readonly source: string;
  private sha: string | undefined;
  constructor(source: string) {
    this.source = source;
  }
  async run(redis: RespClient, keys: string[], args: (string | number)[]): Promise<unknown> {
    this.sha ??= await redis.scriptLoad(this.source);
    try {
      return await redis.evalsha(this.sha, keys.length, ...keys, ...args);
    } catch (err) {
      // A restarted or failed-over server forgets loaded scripts.
      if (replyErrorCode(err) !== 'NOSCRIPT') throw err;
      return redis.eval(this.source, keys.length, ...keys, ...args);
    }
  }
}
