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
// Every write is one Lua script (src/agent/oplog-scripts.ts), atomic on the
// server: an append checks the epoch, assigns consecutive sequence numbers
// after `head`, XADDs each entry with its crc32c, moves `head`, trims, and
// records the batch id. A stale epoch appends nothing, and neither does a
// head below what this writer already wrote in its epoch (the server came
// back from an older copy that still holds the epoch). A batch too large for
// one command is first pushed to a short-lived stage list in pieces; the same
// script then appends it from there in one step, so it stays consecutive,
// fenced and all-or-nothing.
import type { RespClient } from '../lib/resp/client.ts';
import { crc32c } from '../lib/crc32c.ts';
import type { StreamKeys } from '../lib/keys.ts';
import type { Logger } from '../lib/log.ts';
import { APPEND_LUA, LUA_ERR_PARTIAL, LuaScript, RAISE_EPOCH_LUA, replyErrorCode } from './oplog-scripts.ts';
import { FencedError, entryChecksumInput, type OpInput } from './types.ts';

const { randomBytes } = process.getBuiltinModule('node:crypto');

/** How long the server remembers a batch id, to settle an append whose reply was lost. */
const BATCH_MEMORY_MS = 120_000;

/**
 * Dragonfly refuses a command with more arguments than this (its default
 * --max_multi_bulk_len); redis-server allows far more.
 */
export const SERVER_MAX_ARGS = 65_536;
/**
 * Entries per command. An append of up to this many goes as one script call
 * (4 arguments per entry plus 9, about an eighth of SERVER_MAX_ARGS); a larger
 * one is staged in pieces of this size and committed by one script call.
 */
export const APPEND_ENTRIES_PER_COMMAND = 2048;

export interface OpLogOptions {
  redis: RespClient;
  keys: StreamKeys;
  /** The stream's approximate MAXLEN: a hard bound on its memory. */
  maxLength: number;
  log: Logger;
}

const appendScript = new LuaScript(APPEND_LUA);
const raiseEpochScript = new LuaScript(RAISE_EPOCH_LUA);

/** op, key, payload, crc32c of ops[from..to), as the append script reads them. */
function entryFields(ops: readonly OpInput[], from: number, to: number): (string | number)[] {
  const out: (string | number)[] = [];
  for (let i = from; i < to; i++) {
    const op = ops[i]!;
    out.push(op.op, op.key, op.payload, crc32c(entryChecksumInput(op)));
  }
  return out;
}

/** Parses the sequence number out of a stream ID `<seq>-<n>`. */
export function seqOfId(id: string): number {
  return Number(id.slice(0, id.indexOf('-')));
}

export class OpLog {
  private readonly redis: RespClient;
  private readonly keys: StreamKeys;
  private readonly maxLength: number;
  private readonly log: Logger;
  /**
   * The highest seq this process saw written under one epoch (raised, or
   * appended): the stored head can never be below it unless the server lost
   * data, e.g. came back from an older snapshot.
   */
  private written = { epoch: 0, seq: 0 };

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
    this.noteWritten(epoch, second);
    this.log.info({ epoch, headSeq: second }, 'epoch raised in the stream server');
    return { epoch, headSeq: second };
  }

  /**
   * Appends a batch under `epoch`, all or nothing, at consecutive sequence
   * numbers. Throws FencedError when the stored epoch differs (a newer leader
   * exists, or the server was wiped and no leader has raised an epoch since).
   */
  async append(epoch: number, ops: readonly OpInput[], batchId: string): Promise<{ firstSeq: number; lastSeq: number }> {
    if (ops.length === 0) throw new Error('append needs at least one entry');
    const k = this.keys;
    const minHead = this.written.epoch === epoch ? this.written.seq : 0;
    const head: (string | number)[] = [epoch, this.maxLength, BATCH_MEMORY_MS, ops.length, minHead];
    let reply: [number, number | string];
    try {
      if (ops.length <= APPEND_ENTRIES_PER_COMMAND) {
        reply = (await appendScript.run(this.redis, [k.epoch, k.head, k.log, k.batch(batchId)], [...head, ...entryFields(ops, 0, ops.length)])) as typeof reply;
      } else {
        const stage = k.batchStage(`${batchId}:${randomBytes(4).toString('hex')}`);
        await this.stage(stage, ops);
        // The script deletes the stage whatever it answers; this covers a failed call.
        reply = (await appendScript
          .run(this.redis, [k.epoch, k.head, k.log, k.batch(batchId), stage], head)
          .finally(() => this.redis.del(stage).catch(() => undefined))) as typeof reply;
      }
    } catch (err) {
      if (replyErrorCode(err) === LUA_ERR_PARTIAL) this.log.error({ err: (err as Error).message, batchId }, 'append stopped part way; the head covers only the entries written');
      throw err;
    }
    const [first, second] = reply;
    if (first === 0) {
      const fenced = new FencedError(epoch, Number(second));
      if (second === 0) {
        fenced.message = `append refused: the stream server holds no epoch (it restarted empty or was wiped); a leader must be elected again before writes resume`;
      }
      throw fenced;
    }
    if (first === -2) {
      // Same remedy as a wiped server: this leader steps down, and the next
      // one raises the head above everything it applied (raiseEpoch's minHead).
      const fenced = new FencedError(epoch, 0);
      fenced.message = `append refused: the stream server's log ends at seq ${String(second)}, below seq ${minHead} this leader already wrote (it came back from an older copy); a leader must be elected again before writes resume`;
      throw fenced;
    }
    if (first === -1) throw new Error(`append refused by the stream server, nothing was appended: ${String(second)}`);
    this.noteWritten(epoch, Number(second));
    return { firstSeq: first, lastSeq: Number(second) };
  }

  private noteWritten(epoch: number, seq: number): void {
    if (epoch > this.written.epoch || (epoch === this.written.epoch && seq > this.written.seq)) this.written = { epoch, seq };
  }

  /** Pushes a large batch's fields to `stage` in commands of APPEND_ENTRIES_PER_COMMAND entries; it expires on its own if we die. */
  private async stage(stage: string, ops: readonly OpInput[]): Promise<void> {
    const pipeline = this.redis.pipeline();
    for (let from = 0; from < ops.length; from += APPEND_ENTRIES_PER_COMMAND) {
      pipeline.add('RPUSH', stage, ...entryFields(ops, from, Math.min(ops.length, from + APPEND_ENTRIES_PER_COMMAND)));
    }
    pipeline.add('PEXPIRE', stage, BATCH_MEMORY_MS);
    const results = await pipeline.exec();
    const failed = results.find(([err]) => err);
    if (failed) {
      await this.redis.del(stage).catch(() => undefined);
      throw failed[0]!;
    }
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
