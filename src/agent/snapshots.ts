// Snapshots: the leader's master hands over its whole state at a sequence; the
// agent stores it in chunks in the stream server and publishes a descriptor in
// etcd. A new or reset standby loads the newest snapshot, then follows the log
// after its sequence.
//
// Order of writes, so that a reader never sees a descriptor without its data:
// chunks first (under a fresh id nobody references yet), then the descriptor
// list in one etcd transaction guarded by the leader key's create revision ==
// our epoch (a deposed leader cannot publish), then the chunks of snapshots no
// longer kept are deleted. A crash between steps leaves at most unreferenced
// chunks, never a dangling descriptor.
import type { EtcdHttpClient } from '../lib/etcd-http/client.ts';
import type { RespClient } from '../lib/resp/client.ts';
import { crc32c } from '../lib/crc32c.ts';
import type { EtcdKeys, StreamKeys } from '../lib/keys.ts';
import type { Logger } from '../lib/log.ts';
import { NotLeaderError, type SnapshotDescriptor } from './types.ts';

const { randomBytes } = process.getBuiltinModule('node:crypto');

/** Small enough for one Redis bulk string to travel without stalling the server. */
export const SNAPSHOT_CHUNK_BYTES = 256 * 1024;
/** Chunks written or read per round trip. */
const CHUNKS_PER_ROUND = 16;
/** A concurrent publish by the same leader changed the list; attempts before giving up. */
const PUBLISH_ATTEMPTS = 3;

export interface SnapshotStoreOptions {
  redis: RespClient;
  etcd: EtcdHttpClient;
  streamKeys: StreamKeys;
  etcdKeys: EtcdKeys;
  /** Snapshots kept; the log is trimmed before the oldest of them. */
  keep: number;
  log: Logger;
}

/** A snapshot whose stored bytes do not match its descriptor. */
export class SnapshotCorruptError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SnapshotCorruptError';
  }
}

interface DescriptorList {
  /** Oldest first. */
  snapshots: SnapshotDescriptor[];
}

export class SnapshotStore {
  private readonly redis: RespClient;
  private readonly etcd: EtcdHttpClient;
  private readonly sKeys: StreamKeys;
  private readonly eKeys: EtcdKeys;
  private readonly keep: number;
  private readonly log: Logger;

  constructor(opts: SnapshotStoreOptions) {
    if (!Number.isInteger(opts.keep) || opts.keep < 1) throw new Error(`snapshot keep must be an integer >= 1, got ${opts.keep}`);
    this.redis = opts.redis;
    this.etcd = opts.etcd;
    this.sKeys = opts.streamKeys;
    this.eKeys = opts.etcdKeys;
    this.keep = opts.keep;
    this.log = opts.log;
  }

  /**
   * Stores `data` as the state up to and including `seq`, written by the
   * leader of `epoch`. Returns the new descriptor and the kept list (oldest
   * first); the caller trims the log before the oldest kept sequence.
   * Throws NotLeaderError when `epoch` no longer leads.
   */
  async put(seq: number, epoch: number, data: Buffer): Promise<{ descriptor: SnapshotDescriptor; kept: SnapshotDescriptor[] }> {
    const descriptor: SnapshotDescriptor = {
      id: `${seq}-${randomBytes(4).toString('hex')}`,
      seq,
      epoch,
      chunks: Math.max(1, Math.ceil(data.length / SNAPSHOT_CHUNK_BYTES)),
      sizeBytes: data.length,
      crc: crc32c(data),
      createdAt: new Date().toISOString(),
    };
    await this.writeChunks(descriptor, data);
    let published: { kept: SnapshotDescriptor[]; dropped: SnapshotDescriptor[] } | undefined;
    try {
      published = await this.publish(descriptor, epoch);
    } finally {
      if (!published) await this.deleteChunks([descriptor]).catch(() => undefined);
    }
    await this.deleteChunks(published.dropped).catch((err: Error) =>
      this.log.warn({ err: err.message }, 'could not delete the chunks of dropped snapshots; they are unreferenced'),
    );
    return { descriptor, kept: published.kept };
  }

  /** The kept snapshots, oldest first. */
  async list(): Promise<SnapshotDescriptor[]> {
    const raw = await this.etcd.getString(this.eKeys.snapshot);
    return parseList(raw).snapshots;
  }

  /** The newest snapshot, or undefined when none was stored. */
  async latest(): Promise<SnapshotDescriptor | undefined> {
    return (await this.list()).at(-1);
  }

  /** The snapshot's bytes, checked against its size and crc32c. */
  async read(d: SnapshotDescriptor): Promise<Buffer> {
    const parts: Buffer[] = [];
    for (let start = 0; start < d.chunks; start += CHUNKS_PER_ROUND) {
      const pipeline = this.redis.pipeline();
      const end = Math.min(d.chunks, start + CHUNKS_PER_ROUND);
      for (let i = start; i < end; i++) pipeline.addBuffer('GET', this.sKeys.snapshotChunk(d.id, i));
      const results = await pipeline.exec();
      for (let i = start; i < end; i++) {
        const [err, chunk] = results[i - start] ?? [new Error('no reply'), null];
        if (err) throw err;
        if (!(chunk instanceof Buffer)) throw new SnapshotCorruptError(`snapshot ${d.id}: chunk ${i} of ${d.chunks} is missing from the stream server`);
        parts.push(chunk);
      }
    }
    const data = Buffer.concat(parts);
    if (data.length !== d.sizeBytes || crc32c(data) !== d.crc) {
      throw new SnapshotCorruptError(`snapshot ${d.id}: ${data.length} bytes with crc ${crc32c(data)}, descriptor says ${d.sizeBytes} bytes with crc ${d.crc}`);
    }
    return data;
  }

  private async writeChunks(d: SnapshotDescriptor, data: Buffer): Promise<void> {
    for (let start = 0; start < d.chunks; start += CHUNKS_PER_ROUND) {
      const pipeline = this.redis.pipeline();
      for (let i = start; i < Math.min(d.chunks, start + CHUNKS_PER_ROUND); i++) {
        pipeline.add('SET', this.sKeys.snapshotChunk(d.id, i), data.subarray(i * SNAPSHOT_CHUNK_BYTES, (i + 1) * SNAPSHOT_CHUNK_BYTES));
      }
      const results = await pipeline.exec();
      const failed = results.find(([err]) => err);
      if (failed) throw failed[0]!;
    }
  }

  private async deleteChunks(descriptors: SnapshotDescriptor[]): Promise<void> {
    for (const d of descriptors) {
      const keys = Array.from({ length: d.chunks }, (_, i) => this.sKeys.snapshotChunk(d.id, i));
      for (let i = 0; i < keys.length; i += 500) await this.redis.del(...keys.slice(i, i + 500));
    }
  }

  /** Adds the descriptor to the kept list, guarded by leadership; drops the oldest beyond `keep`. */
  private async publish(d: SnapshotDescriptor, epoch: number): Promise<{ kept: SnapshotDescriptor[]; dropped: SnapshotDescriptor[] }> {
    for (let attempt = 1; attempt <= PUBLISH_ATTEMPTS; attempt++) {
      const current = await this.etcd.range({ key: this.eKeys.snapshot });
      const kv = current.kvs[0];
      const all = [...parseList(kv?.value.toString()).snapshots, d].sort((a, b) => a.seq - b.seq);
      const kept = all.slice(-this.keep);
      const dropped = all.slice(0, all.length - kept.length);
      const value = JSON.stringify({ snapshots: kept } satisfies DescriptorList);
      const result = await this.etcd.txn({
        compare: [
          { key: this.eKeys.leader, target: 'CREATE', result: 'EQUAL', value: epoch },
          { key: this.eKeys.snapshot, target: 'MOD', result: 'EQUAL', value: kv ? Number(kv.mod_revision) : 0 },
        ],
        success: [{ put: { key: this.eKeys.snapshot, value } }],
      });
      if (result.succeeded) {
        if (!kept.includes(d)) this.log.warn({ seq: d.seq }, 'the new snapshot is older than every kept one; it was dropped at once');
        return { kept, dropped };
      }
      const leader = await this.etcd.range({ key: this.eKeys.leader });
      if (Number(leader.kvs[0]?.create_revision ?? 0) !== epoch) throw new NotLeaderError(undefined);
    }
    throw new Error(`could not publish snapshot ${d.id}: the descriptor list kept changing under ${PUBLISH_ATTEMPTS} attempts`);
  }
}

function parseList(raw: string | null | undefined): DescriptorList {
  if (!raw) return { snapshots: [] };
  const parsed = JSON.parse(raw) as Partial<DescriptorList>;
  return { snapshots: Array.isArray(parsed.snapshots) ? parsed.snapshots : [] };
}
