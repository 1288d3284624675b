// The shapes etcd's JSON gateway speaks (the v3 gRPC messages in proto3 JSON:
// snake_case names, int64 as decimal strings, bytes as base64, zero values
// left out), decoded so that keys and values are Buffers and every field the
// agent reads is present. Requests are written in our own small terms and
// encoded here.

export type Bytes = string | Buffer;

export interface ResponseHeader {
  cluster_id: string;
  member_id: string;
  /** The store's revision when the request was served. */
  revision: string;
  raft_term: string;
}

export interface KeyValue {
  key: Buffer;
  value: Buffer;
  create_revision: string;
  mod_revision: string;
  version: string;
  /** "0" when the key has no lease. */
  lease: string;
}

export interface RangeResponse {
  header: ResponseHeader;
  kvs: KeyValue[];
  more: boolean;
  count: string;
}

export interface PutResponse {
  header: ResponseHeader;
  prev_kv?: KeyValue;
}

export interface DeleteRangeResponse {
  header: ResponseHeader;
  deleted: string;
}

/** The answer to one operation of a transaction: exactly one field is set. */
export interface ResponseOp {
  response_range?: RangeResponse;
  response_put?: PutResponse;
  response_delete_range?: DeleteRangeResponse;
}

export interface TxnResponse {
  header: ResponseHeader;
  succeeded: boolean;
  responses: ResponseOp[];
}

export interface LeaseGrantResponse {
  header: ResponseHeader;
  ID: string;
  /** Seconds the server granted (it may raise a too-small request). */
  TTL: string;
}

export interface LeaseKeepAliveResponse {
  ID: string;
  /** Seconds left; "0" when the lease no longer exists. */
  TTL: string;
}

export interface WatchEvent {
  type: 'put' | 'delete';
  kv: KeyValue;
  prev_kv?: KeyValue;
}

export interface WatchResponse {
  header: ResponseHeader;
  watch_id: string;
  created: boolean;
  canceled: boolean;
  /** Set on a watch cancelled because its start revision was compacted away. */
  compact_revision: string;
  cancel_reason: string;
  events: WatchEvent[];
}

// ------------------------------------------------------------ requests

export interface RangeRequest {
  key: Bytes;
  /** Every key that starts with `key`. */
  prefix?: boolean;
  /** Read the store as it was at this revision. */
  revision?: number;
  limit?: number;
  sort?: { target: 'KEY' | 'VERSION' | 'CREATE' | 'MOD' | 'VALUE'; order: 'ASCEND' | 'DESCEND' };
}

export interface PutRequest {
  key: Bytes;
  value: Bytes;
  /** Lease id the key lives under. */
  lease?: string;
}

export interface DeleteRequest {
  key: Bytes;
  prefix?: boolean;
}

/** One comparison of a transaction: `target(key) result value`. */
export interface Compare {
  key: Bytes;
  target: 'CREATE' | 'MOD' | 'VERSION' | 'VALUE' | 'LEASE';
  result: 'EQUAL' | 'GREATER' | 'LESS' | 'NOT_EQUAL';
  /** A revision, version or lease id for those targets; the bytes for VALUE. */
  value: number | string | Buffer;
}

export type RequestOp = { range: RangeRequest } | { put: PutRequest } | { delete: DeleteRequest };

export interface TxnRequest {
  compare: Compare[];
  success: RequestOp[];
  failure?: RequestOp[];
}

export interface WatchRequest {
  key: Bytes;
  prefix?: boolean;
  /** First revision to deliver; default: changes after now. */
  startRevision?: number;
  /** Ask etcd for progress notifications (empty responses) while idle. */
  progressNotify?: boolean;
  prevKv?: boolean;
}

// ------------------------------------------------------------ encoding

function b64(bytes: Bytes): string {
  return (typeof bytes === 'string' ? Buffer.from(bytes) : bytes).toString('base64');
}

/**
 * The range end that makes a range cover every key starting with `key`: the
 * key with its last byte below 0xff incremented and the rest dropped; "\0"
 * (every key) when all bytes are 0xff.
 */
export function prefixRangeEnd(key: Bytes): Buffer {
  const bytes = Buffer.from(typeof key === 'string' ? Buffer.from(key) : key);
  for (let i = bytes.length - 1; i >= 0; i--) {
    if (bytes[i]! < 0xff) {
      bytes[i]! += 1;
      return bytes.subarray(0, i + 1);
    }
  }
  return Buffer.from([0]);
}

function keyRange(key: Bytes, prefix: boolean | undefined): { key: string; range_end?: string } {
  return prefix ? { key: b64(key), range_end: b64(prefixRangeEnd(key)) } : { key: b64(key) };
}

export function encodeRange(req: RangeRequest): Record<string, unknown> {
  return {
    ...keyRange(req.key, req.prefix),
    ...(req.revision !== undefined ? { revision: String(req.revision) } : {}),
    ...(req.limit !== undefined ? { limit: String(req.limit) } : {}),
    ...(req.sort ? { sort_target: req.sort.target, sort_order: req.sort.order } : {}),
  };
}

export function encodePut(req: PutRequest): Record<string, unknown> {
  return { key: b64(req.key), value: b64(req.value), ...(req.lease !== undefined ? { lease: req.lease } : {}) };
}

export function encodeDelete(req: DeleteRequest): Record<string, unknown> {
  return keyRange(req.key, req.prefix);
}

function encodeCompare(c: Compare): Record<string, unknown> {
  const base = { key: b64(c.key), target: c.target, result: c.result };
  switch (c.target) {
    case 'CREATE':
      return { ...base, create_revision: String(c.value) };
    case 'MOD':
      return { ...base, mod_revision: String(c.value) };
    case 'VERSION':
      return { ...base, version: String(c.value) };
    case 'LEASE':
      return { ...base, lease: String(c.value) };
    case 'VALUE':
      return { ...base, value: b64(typeof c.value === 'number' ? String(c.value) : c.value) };
  }
}

function encodeOp(op: RequestOp): Record<string, unknown> {
  if ('range' in op) return { request_range: encodeRange(op.range) };
  if ('put' in op) return { request_put: encodePut(op.put) };
  return { request_delete_range: encodeDelete(op.delete) };
}

export function encodeTxn(req: TxnRequest): Record<string, unknown> {
  return { compare: req.compare.map(encodeCompare), success: req.success.map(encodeOp), failure: (req.failure ?? []).map(encodeOp) };
}

export function encodeWatch(req: WatchRequest): Record<string, unknown> {
  return {
    create_request: {
      ...keyRange(req.key, req.prefix),
      ...(req.startRevision !== undefined ? { start_revision: String(req.startRevision) } : {}),
      ...(req.progressNotify ? { progress_notify: true } : {}),
      ...(req.prevKv ? { prev_kv: true } : {}),
    },
  };
}

// ------------------------------------------------------------ decoding

type Json = Record<string, unknown>;

const str = (v: unknown, fallback = '0'): string => (typeof v === 'string' ? v : typeof v === 'number' ? String(v) : fallback);
const buf = (v: unknown): Buffer => (typeof v === 'string' ? Buffer.from(v, 'base64') : Buffer.alloc(0));

export function decodeHeader(raw: unknown): ResponseHeader {
  const h = (raw ?? {}) as Json;
  return { cluster_id: str(h.cluster_id), member_id: str(h.member_id), revision: str(h.revision), raft_term: str(h.raft_term) };
}

export function decodeKv(raw: unknown): KeyValue {
  const kv = (raw ?? {}) as Json;
  return {
    key: buf(kv.key),
    value: buf(kv.value),
    create_revision: str(kv.create_revision),
    mod_revision: str(kv.mod_revision),
    version: str(kv.version),
    lease: str(kv.lease),
  };
}

export function decodeRange(raw: Json): RangeResponse {
  const kvs = Array.isArray(raw.kvs) ? raw.kvs.map(decodeKv) : [];
  return { header: decodeHeader(raw.header), kvs, more: raw.more === true, count: str(raw.count) };
}

export function decodePut(raw: Json): PutResponse {
  return { header: decodeHeader(raw.header), ...(raw.prev_kv ? { prev_kv: decodeKv(raw.prev_kv) } : {}) };
}

export function decodeDelete(raw: Json): DeleteRangeResponse {
  return { header: decodeHeader(raw.header), deleted: str(raw.deleted) };
}

export function decodeTxn(raw: Json): TxnResponse {
  const responses: ResponseOp[] = (Array.isArray(raw.responses) ? (raw.responses as Json[]) : []).map((r) => {
    if (r.response_range) return { response_range: decodeRange(r.response_range as Json) };
    if (r.response_put) return { response_put: decodePut(r.response_put as Json) };
    return { response_delete_range: decodeDelete((r.response_delete_range ?? {}) as Json) };
  });
  return { header: decodeHeader(raw.header), succeeded: raw.succeeded === true, responses };
}

export function decodeWatch(raw: Json): WatchResponse {
  const events: WatchEvent[] = (Array.isArray(raw.events) ? (raw.events as Json[]) : []).map((e) => ({
    type: e.type === 'DELETE' ? 'delete' : 'put',
    kv: decodeKv(e.kv),
    ...(e.prev_kv ? { prev_kv: decodeKv(e.prev_kv) } : {}),
  }));
  return {
    header: decodeHeader(raw.header),
    watch_id: str(raw.watch_id),
    created: raw.created === true,
    canceled: raw.canceled === true,
    compact_revision: str(raw.compact_revision),
    cancel_reason: str(raw.cancel_reason, ''),
    events,
  };
}
