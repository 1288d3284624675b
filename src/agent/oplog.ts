// The operation log's write side: a Redis-protocol stream (Dragonfly in
// production) that only the current epoch may append to.
//
// Layout (src/lib/keys.ts): the stream `log` holds one entry per operation,
// with the stream ID `<seq>-0` so a sequence number is an ID and a standby can
// read "everything after seq" directly; `epoch` is the highest epoch allowed to
// append; `head` is the highest sequence ever assigned (it survives trimming);
// `epochs` maps each raised epoch to the head at the moment it was raised, so
// a standby can tell a continuation of its history from a different one.
//
// Every write is one Lua script, atomic on the server: an append checks the
// epoch, assigns consecutive sequence numbers after `head`, XADDs each entry
// with its crc32c, moves `head`, trims, and records the batch id. A stale
// epoch appends nothing. Scripts name every key they touch in KEYS, which
// Dragonfly requires.
import type { Redis } from 'ioredis';
import { crc32c } from '../lib/crc32c.ts';
import type { StreamKeys } from '../lib/keys.ts';
import type { Logger } from '../lib/log.ts';
import { FencedError, entryChecksumInput, type OpInput } from './types.ts';

/** How long the server remembers a batch id, to settle an append whose reply was lost. */
const BATCH_MEMORY_MS = 120_000;

// KEYS: epoch, head, log, batch   ARGV: writerEpoch, maxLength, batchMemoryMs, then op, key, payload, crc per entry.
// Returns {first, last}; {0, currentEpoch} when fenced (currentEpoch 0: no epoch
// stored, the server was wiped); {-1, message} when the first XADD failed (nothing written).
const APPEND_LUA = `
local cur = redis.call('GET', KEYS[1])
if not cur then return {0, 0} end
if tonumber(cur) ~= tonumber(ARGV[1]) then return {0, tonumber(cur)} end
local head = tonumber(redis.call('GET', KEYS[2]) or '0')
local n = (#ARGV - 3) / 4
local i = 4
for s = head + 1, head + n do
  local r = redis.pcall('XADD', KEYS[3], string.format('%d-0', s), 'e', ARGV[1], 'o', ARGV[i], 'k', ARGV[i+1], 'p', ARGV[i+2], 'c', ARGV[i+3])
  if type(r) == 'table' and r.err then
    if s == head + 1 then return {-1, r.err} end
    redis.call('SET', KEYS[2], s - 1)
    return redis.error_reply('append stopped after seq ' .. (s - 1) .. ': ' .. r.err)
  end
  i = i + 4
end
redis.call('SET', KEYS[2], head + n)
redis.call('XTRIM', KEYS[3], 'MAXLEN', '~', ARGV[2])
redis.call('SET', KEYS[4], string.format('%d-%d', head + 1, head + n), 'PX', ARGV[3])
return {head + 1, head + n}
`;

// KEYS: epoch, head, log, epochs   ARGV: epoch, minHead.
// Never lowers the epoch. The head becomes the highest of: the stored head, the
// stream's last entry, and minHead (what the new leader already applied), so a
// sequence number is never handed out twice even after the server lost data.
// Returns {epoch, head}, or {0, currentEpoch} when a newer epoch is stored.
const RAISE_EPOCH_LUA = `
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
local e = tonumber(ARGV[1])
if cur > e then return {0, cur} end
local head = tonumber(redis.call('GET', KEYS[2]) or '0')
local last = redis.call('XREVRANGE', KEYS[3], '+', '-', 'COUNT', 1)
if #last > 0 then
  local s = tonumber(string.match(last[1][1], '^(%d+)'))
  if s > head then head = s end
end
local minHead = tonumber(ARGV[2])
if minHead > head then head = minHead end
redis.call('SET', KEYS[1], e)
redis.call('SET', KEYS[2], head)
redis.call('HSETNX', KEYS[4], e, head)
return {e, tonumber(redis.call('HGET', KEYS[4], e))}
`;

export interface OpLogOptions {
  redis: Redis;
  keys: StreamKeys;
  /** The stream's approximate MAXLEN: a hard bound on its memory. */
  maxLength: number;
  log: Logger;
}

interface ScriptRunner {
  evalsha(sha: string, numKeys: number, ...args: (string | number)[]): Promise<unknown>;
  eval(script: string, numKeys: number, ...args: (string | number)[]): Promise<unknown>;
}

/** Runs a Lua script by its SHA, loading it the first time the server does not know it. */
export class LuaScript {
  private readonly source: string;
  private sha: string | undefined;
  constructor(source: string) {
    this.source = source;
  }
  async run(redis: Redis, keys: string[], args: (string | number)[]): Promise<unknown> {
    const runner = redis as unknown as ScriptRunner;
    this.sha ??= (await redis.script('LOAD', this.source)) as string;
    try {
      return await runner.evalsha(this.sha, keys.length, ...keys, ...args);
    } catch (err) {
      // A restarted or failed-over server forgets loaded scripts.
      if (!/NOSCRIPT/.test((err as Error).message)) throw err;
      return runner.eval(this.source, keys.length, ...keys, ...args);
    }
  }
}

const appendScript = new LuaScript(APPEND_LUA);
const raiseEpochScript = new LuaScript(RAISE_EPOCH_LUA);

/** Parses the sequence number out of a stream ID `<seq>-<n>`. */
export function seqOfId(id: string): number {
  return Number(id.slice(0, id.indexOf('-')));
}

export class OpLog {
  private readonly redis: Redis;
  private readonly keys: StreamKeys;
  private readonly maxLength: number;
  private readonly log: Logger;

  constructor(opts: OpLogOptions) {
    this.redis = opts.redis;
    this.keys = opts.keys;
    this.maxLength = opts.maxLength;
    this.log = opts.log;
  }

  /**
   * Makes `epoch` the only epoch allowed to append (from here on an older
   * leader's appends are refused) and returns the head the new leader must
   * apply up to before it accepts writes. Throws FencedError when a newer epoch
   * is already stored.
   */
  async raiseEpoch(epoch: number, minHead: number): Promise<{ epoch: number; headSeq: number }> {
    const k = this.keys;
    const [first, second] = (await raiseEpochScript.run(this.redis, [k.epoch, k.head, k.log, k.epochStarts], [epoch, minHead])) as [
      number,
      number,
    ];
    if (first === 0) throw new FencedError(epoch, second);
    this.log.info({ epoch, headSeq: second }, 'epoch raised in the stream server');
    return { epoch, headSeq: second };
  }

  /**
   * Appends a batch under `epoch`, all or nothing. Throws FencedError when the
   * stored epoch differs (a newer leader exists, or the server was wiped and no
   * leader has raised an epoch since).
   */
  async append(epoch: number, ops: readonly OpInput[], batchId: string): Promise<{ firstSeq: number; lastSeq: number }> {
    if (ops.length === 0) throw new Error('append needs at least one entry');
    const args: (string | number)[] = [epoch, this.maxLength, BATCH_MEMORY_MS];
    for (const op of ops) args.push(op.op, op.key, op.payload, crc32c(entryChecksumInput(op)));
    const k = this.keys;
    const [first, second] = (await appendScript.run(this.redis, [k.epoch, k.head, k.log, k.batch(batchId)], args)) as [
      number,
      number | string,
    ];
    if (first === 0) {
      const fenced = new FencedError(epoch, Number(second));
      if (second === 0) {
        fenced.message = `append refused: the stream server holds no epoch (it restarted empty or was wiped); a leader must be elected again before writes resume`;
      }
      throw fenced;
    }
    if (first === -1) throw new Error(`append refused by the stream server, nothing was appended: ${String(second)}`);
    return { firstSeq: first, lastSeq: Number(second) };
  }

  /** Where a batch landed, if it landed in the last two minutes; for an append whose reply was lost. */
  async findBatch(batchId: string): Promise<{ firstSeq: number; lastSeq: number } | undefined> {
    const found = await this.redis.get(this.keys.batch(batchId));
    if (!found) return undefined;
    const [first, last] = found.split('-').map(Number) as [number, number];
    return { firstSeq: first, lastSeq: last };
  }

  /** The highest sequence ever assigned; 0 when nothing was appended. */
  async headSeq(): Promise<number> {
    return Number((await this.redis.get(this.keys.head)) ?? 0);
  }

  /** The epoch allowed to append; 0 when none is stored. */
  async currentEpoch(): Promise<number> {
    return Number((await this.redis.get(this.keys.epoch)) ?? 0);
  }

  /** Entries held in the stream now (after trimming). */
  length(): Promise<number> {
    return this.redis.xlen(this.keys.log);
  }

  /** The oldest sequence still in the stream; undefined when it is empty. */
  async firstSeq(): Promise<number | undefined> {
    const first = await this.redis.xrange(this.keys.log, '-', '+', 'COUNT', 1);
    return first[0] ? seqOfId(first[0][0]) : undefined;
  }

  /** Drops entries below `seq` (they are covered by a kept snapshot). Returns how many went. */
  async trimBefore(seq: number): Promise<number> {
    if (seq <= 1) return 0;
    const removed = await this.redis.xtrim(this.keys.log, 'MINID', `${seq}-0`);
    if (removed > 0) this.log.debug({ beforeSeq: seq, removed }, 'trimmed the log before the oldest kept snapshot');
    return removed;
  }

  /** The connection belongs to the caller; nothing of its own to release. */
  async close(): Promise<void> {}
}
