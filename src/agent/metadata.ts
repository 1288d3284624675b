// Small versioned metadata for the master, kept in etcd under `meta/<key>`.
// Every value carries etcd's mod revision, so a master can do compare-and-set:
// a write names the revision it read and is refused (with the current one) when
// somebody else wrote in between. etcd evaluates the comparison and the write
// in one transaction, so of two writers racing on the same revision exactly
// one wins.
import type { EtcdHttpClient } from '../lib/etcd-http/client.ts';
import type { EtcdKeys } from '../lib/keys.ts';
import type { Logger } from '../lib/log.ts';

export const META_KEY_MAX_LENGTH = 512;
/** etcd refuses requests over 1.5 MiB; a value must fit with room for the key. */
export const META_VALUE_MAX_BYTES = 1024 * 1024;
export const META_LIST_DEFAULT_LIMIT = 1000;
export const META_LIST_MAX_LIMIT = 10_000;
const DEFAULT_CALL_TIMEOUT_MS = 5000;

const KEY_PATTERN = /^[A-Za-z0-9._~/-]+$/;

/** Bad input to the metadata store; `field` names what to fix. Nothing was changed. */
export class MetadataInputError extends RangeError {
  readonly field: string;
  constructor(field: string, message: string) {
    super(message);
    this.name = 'MetadataInputError';
    this.field = field;
  }
}

/** An error message for a key the store would refuse, or undefined when it is fine. */
export function validateMetaKey(key: string): string | undefined {
  if (typeof key !== 'string' || key.length === 0) return 'key must be 1-512 characters of A-Z a-z 0-9 . _ ~ / -, got an empty key';
  if (key.length > META_KEY_MAX_LENGTH) return `key must be at most ${META_KEY_MAX_LENGTH} characters, got ${key.length}`;
  if (!KEY_PATTERN.test(key)) {
    const bad = [...key].find((c) => !KEY_PATTERN.test(c)) ?? '';
    return `key may contain only A-Z a-z 0-9 . _ ~ / -, got ${JSON.stringify(bad)} in ${JSON.stringify(key.slice(0, 64))}`;
  }
  return undefined;
}

export interface MetaEntry {
  key: string;
  value: string;
  modRevision: number;
  version: number;
}

export type MetaPutResult = { ok: true; modRevision: number } | { ok: false; currentModRevision: number };
export type MetaDeleteResult = 'deleted' | 'absent' | { conflict: number };

export class MetadataStore {
  private readonly etcd: EtcdHttpClient;
  private readonly keys: EtcdKeys;
  private readonly log: Logger;
  private readonly callTimeoutMs: number;

  constructor(opts: { etcd: EtcdHttpClient; keys: EtcdKeys; log: Logger; callTimeoutMs?: number }) {
    this.etcd = opts.etcd;
    this.keys = opts.keys;
    this.log = opts.log.child({ module: 'metadata' });
    this.callTimeoutMs = opts.callTimeoutMs ?? DEFAULT_CALL_TIMEOUT_MS;
  }

  async get(key: string): Promise<MetaEntry | undefined> {
    checkKey(key);
    const res = await this.etcd.range({ key: this.keys.meta(key) }, this.callTimeoutMs);
    const kv = res.kvs[0];
    if (!kv) return undefined;
    return { key, value: kv.value.toString('utf8'), modRevision: Number(kv.mod_revision), version: Number(kv.version) };
  }

  /**
   * Writes `value`. With `expectedModRevision` the write happens only when the
   * key's current mod revision equals it (0: only when the key is absent);
   * otherwise the answer names the current revision (0 = absent).
   */
  async put(key: string, value: string, expectedModRevision?: number): Promise<MetaPutResult> {
    checkKey(key);
    if (typeof value !== 'string') throw new MetadataInputError('value', 'value must be a string');
    const bytes = Buffer.byteLength(value, 'utf8');
    if (bytes > META_VALUE_MAX_BYTES) {
      throw new MetadataInputError('value', `value must be at most ${META_VALUE_MAX_BYTES} bytes, got ${bytes}`);
    }
    checkExpected(expectedModRevision);
    const etcdKey = this.keys.meta(key);
    if (expectedModRevision === undefined) {
      // A timed-out write may still be applied by etcd later; callers that must
      // know read the key back (its mod revision tells).
      const res = await this.etcd.put({ key: etcdKey, value }, this.callTimeoutMs);
      return { ok: true, modRevision: Number(res.header.revision) };
    }
    const res = await this.etcd.txn(
      {
        compare: [{ key: etcdKey, target: 'MOD', result: 'EQUAL', value: expectedModRevision }],
        success: [{ put: { key: etcdKey, value } }],
        failure: [{ range: { key: etcdKey } }],
      },
      this.callTimeoutMs,
    );
    if (res.succeeded) return { ok: true, modRevision: Number(res.header.revision) };
    const current = res.responses[0]?.response_range?.kvs[0];
    const currentModRevision = current ? Number(current.mod_revision) : 0;
    this.log.debug({ key, expectedModRevision, currentModRevision }, 'metadata compare-and-set lost');
    return { ok: false, currentModRevision };
  }

  /**
   * Deletes the key. With `expectedModRevision` only when its mod revision
   * still equals it; a key that is already gone answers 'absent' either way.
   */
  async delete(key: string, expectedModRevision?: number): Promise<MetaDeleteResult> {
    checkKey(key);
    checkExpected(expectedModRevision);
    const etcdKey = this.keys.meta(key);
    if (expectedModRevision === undefined) {
      const res = await this.etcd.delete({ key: etcdKey }, this.callTimeoutMs);
      return Number(res.deleted) > 0 ? 'deleted' : 'absent';
    }
    const res = await this.etcd.txn(
      {
        compare: [{ key: etcdKey, target: 'MOD', result: 'EQUAL', value: expectedModRevision }],
        success: [{ delete: { key: etcdKey } }],
        failure: [{ range: { key: etcdKey } }],
      },
      this.callTimeoutMs,
    );
    if (res.succeeded) {
      // Mod == 0 also matches an absent key: then nothing was deleted.
      return Number(res.responses[0]?.response_delete_range?.deleted ?? 0) > 0 ? 'deleted' : 'absent';
    }
    const current = res.responses[0]?.response_range?.kvs[0];
    if (!current) return 'absent';
    this.log.debug({ key, expectedModRevision, currentModRevision: Number(current.mod_revision) }, 'metadata delete refused: stale revision');
    return { conflict: Number(current.mod_revision) };
  }

  /** Keys starting with `prefix` (all when omitted), in key order, at most `limit` (default 1000, max 10000). */
  async list(prefix = '', limit = META_LIST_DEFAULT_LIMIT): Promise<Array<{ key: string; value: string; modRevision: number }>> {
    if (typeof prefix !== 'string') throw new MetadataInputError('prefix', 'prefix must be a string');
    if (prefix !== '') {
      const problem = validateMetaKey(prefix);
      if (problem) throw new MetadataInputError('prefix', `prefix: ${problem}`);
    }
    if (!Number.isInteger(limit) || limit < 1 || limit > META_LIST_MAX_LIMIT) {
      throw new MetadataInputError('limit', `limit must be an integer from 1 to ${META_LIST_MAX_LIMIT}, got ${String(limit)}`);
    }
    const base = this.keys.metaPrefix;
    const res = await this.etcd.range({ key: base + prefix, prefix: true, sort: { target: 'KEY', order: 'ASCEND' }, limit }, this.callTimeoutMs);
    return res.kvs.map((kv) => ({
      key: kv.key.toString('utf8').slice(base.length),
      value: kv.value.toString('utf8'),
      modRevision: Number(kv.mod_revision),
    }));
  }
}

function checkKey(key: string): void {
  const problem = validateMetaKey(key);
  if (problem) throw new MetadataInputError('key', problem);
}

function checkExpected(expected: number | undefined): void {
  if (expected === undefined) return;
  if (!Number.isSafeInteger(expected) || expected < 0) {
    throw new MetadataInputError(
      'expectedModRevision',
      `expectedModRevision must be an integer >= 0 (0 = only if absent), or omitted for an unconditional write; got ${String(expected)}`,
    );
  }
}
