// The pure half of the JSON-gateway etcd client (src/lib/etcd-http/types.ts):
// how requests are written for the gateway and how its proto3 JSON answers
// (int64 as strings, bytes as base64, zero values left out) are read back.
// What etcd itself makes of them is tested against a real etcd in
// test/integration/etcd-http.test.ts. Also the client's option checks, which need no etcd.
import { describe, expect, it } from 'vitest';
import { EtcdHttpClient } from '../../src/lib/etcd-http/client.ts';
import {
  decodeDelete,
  decodeHeader,
  decodeKv,
  decodePut,
  decodeRange,
  decodeTxn,
  decodeWatch,
  encodeDelete,
  encodePut,
  encodeRange,
  encodeTxn,
  encodeWatch,
  prefixRangeEnd,
} from '../../src/lib/etcd-http/types.ts';

const b64 = (s: string | Buffer): string => (typeof s === 'string' ? Buffer.from(s) : s).toString('base64');
const hex = (b: Buffer): string => b.toString('hex');

describe('prefixRangeEnd', () => {
  it('increments the last byte', () => {
    expect(prefixRangeEnd('a').toString()).toBe('b');
    expect(prefixRangeEnd('/hotstandby/ns/c/').toString()).toBe('/hotstandby/ns/c0');
    expect(hex(prefixRangeEnd(Buffer.from([0x00])))).toBe('01');
    expect(hex(prefixRangeEnd(Buffer.from([0x61, 0xfe])))).toBe('61ff');
  });

  it('drops trailing 0xff bytes and increments the byte before them', () => {
    expect(hex(prefixRangeEnd(Buffer.from([0x61, 0xff])))).toBe('62');
    expect(hex(prefixRangeEnd(Buffer.from([0x61, 0x62, 0xff, 0xff])))).toBe('6163');
    expect(hex(prefixRangeEnd(Buffer.from([0xfe, 0xff])))).toBe('ff');
  });

  it('is "\\0" (every key) when every byte is 0xff, and for the empty key', () => {
    expect(hex(prefixRangeEnd(Buffer.from([0xff])))).toBe('00');
    expect(hex(prefixRangeEnd(Buffer.from([0xff, 0xff, 0xff])))).toBe('00');
    expect(hex(prefixRangeEnd(''))).toBe('00');
  });

  it('works on UTF-8 bytes of a string key and leaves a Buffer key unchanged', () => {
    // "é" is c3 a9: the range end increments the last byte, not the character.
    expect(hex(prefixRangeEnd('é'))).toBe('c3aa');
    const key = Buffer.from([0x61, 0xff]);
    prefixRangeEnd(key);
    expect(hex(key)).toBe('61ff');
  });
});

describe('request encoding', () => {
  it('range: base64 key, range_end only for a prefix, int64 fields as strings, sort names', () => {
    expect(encodeRange({ key: 'k' })).toEqual({ key: b64('k') });
    expect(encodeRange({ key: 'p/', prefix: true, revision: 42, limit: 2, sort: { target: 'MOD', order: 'DESCEND' } })).toEqual({
      key: b64('p/'),
      range_end: b64('p0'),
      revision: '42',
      limit: '2',
      sort_target: 'MOD',
      sort_order: 'DESCEND',
    });
    expect(encodeRange({ key: Buffer.from([0x61, 0xff]), prefix: true })).toEqual({ key: b64(Buffer.from([0x61, 0xff])), range_end: b64('b') });
  });

  it('put: base64 key and value, the lease id passed through as a string', () => {
    expect(encodePut({ key: 'k', value: 'v' })).toEqual({ key: b64('k'), value: b64('v') });
    // Lease ids are int64 and do not fit a JS number: they stay strings end to end.
    expect(encodePut({ key: 'k', value: Buffer.from([0, 1, 2]), lease: '7587888015471306250' })).toEqual({
      key: b64('k'),
      value: b64(Buffer.from([0, 1, 2])),
      lease: '7587888015471306250',
    });
  });

  it('delete: single key or prefix', () => {
    expect(encodeDelete({ key: 'k' })).toEqual({ key: b64('k') });
    expect(encodeDelete({ key: 'k', prefix: true })).toEqual({ key: b64('k'), range_end: b64('l') });
  });

  it('txn: each compare target writes its own field, the failure branch defaults to empty', () => {
    const t = encodeTxn({
      compare: [
        { key: 'a', target: 'CREATE', result: 'EQUAL', value: 0 },
        { key: 'b', target: 'MOD', result: 'LESS', value: 17 },
        { key: 'c', target: 'VERSION', result: 'GREATER', value: 3 },
        { key: 'd', target: 'LEASE', result: 'NOT_EQUAL', value: '7587888015471306250' },
        { key: 'e', target: 'VALUE', result: 'EQUAL', value: Buffer.from('x') },
        { key: 'f', target: 'VALUE', result: 'EQUAL', value: 12 },
        { key: 'g', target: 'VALUE', result: 'EQUAL', value: 'text' },
      ],
      success: [{ put: { key: 'a', value: '1', lease: '5' } }],
    });
    expect(t.compare).toEqual([
      { key: b64('a'), target: 'CREATE', result: 'EQUAL', create_revision: '0' },
      { key: b64('b'), target: 'MOD', result: 'LESS', mod_revision: '17' },
      { key: b64('c'), target: 'VERSION', result: 'GREATER', version: '3' },
      { key: b64('d'), target: 'LEASE', result: 'NOT_EQUAL', lease: '7587888015471306250' },
      { key: b64('e'), target: 'VALUE', result: 'EQUAL', value: b64('x') },
      { key: b64('f'), target: 'VALUE', result: 'EQUAL', value: b64('12') },
      { key: b64('g'), target: 'VALUE', result: 'EQUAL', value: b64('text') },
    ]);
    expect(t.success).toEqual([{ request_put: { key: b64('a'), value: b64('1'), lease: '5' } }]);
    expect(t.failure).toEqual([]);
  });

  it('txn: ops become request_range / request_put / request_delete_range', () => {
    const t = encodeTxn({
      compare: [],
      success: [{ delete: { key: 'p/', prefix: true } }],
      failure: [{ range: { key: 'a' } }, { put: { key: 'b', value: '' } }],
    });
    expect(t.success).toEqual([{ request_delete_range: { key: b64('p/'), range_end: b64('p0') } }]);
    expect(t.failure).toEqual([{ request_range: { key: b64('a') } }, { request_put: { key: b64('b'), value: '' } }]);
  });

  it('watch: a create_request with only the options asked for', () => {
    expect(encodeWatch({ key: 'k' })).toEqual({ create_request: { key: b64('k') } });
    expect(encodeWatch({ key: 'p/', prefix: true, startRevision: 9, progressNotify: true, prevKv: true })).toEqual({
      create_request: { key: b64('p/'), range_end: b64('p0'), start_revision: '9', progress_notify: true, prev_kv: true },
    });
  });
});

describe('response decoding (proto3 JSON omits zero values)', () => {
  const header = { cluster_id: '14841639068965178418', member_id: '10276657743932975437', revision: '12', raft_term: '2' };

  it('header: every field present, "0" when omitted', () => {
    expect(decodeHeader(header)).toEqual(header);
    expect(decodeHeader(undefined)).toEqual({ cluster_id: '0', member_id: '0', revision: '0', raft_term: '0' });
    expect(decodeHeader({ revision: 5 })).toMatchObject({ revision: '5' });
  });

  it('kv: base64 decoded to Buffers; an omitted value, version or lease reads as empty / "0"', () => {
    const kv = decodeKv({ key: b64(Buffer.from([0, 0xff])), create_revision: '3', mod_revision: '4' });
    expect(hex(kv.key)).toBe('00ff');
    expect(kv.value.length).toBe(0);
    expect(kv).toMatchObject({ create_revision: '3', mod_revision: '4', version: '0', lease: '0' });
    const full = decodeKv({ key: b64('k'), value: b64('v'), create_revision: '3', mod_revision: '4', version: '2', lease: '7587888015471306250' });
    expect(full.value.toString()).toBe('v');
    expect(full.lease).toBe('7587888015471306250');
  });

  it('range: no kvs, more or count when nothing matched', () => {
    expect(decodeRange({ header })).toEqual({ header, kvs: [], more: false, count: '0' });
    const r = decodeRange({ header, kvs: [{ key: b64('a'), value: b64('1') }], more: true, count: '3' });
    expect(r.kvs.map((kv) => kv.key.toString())).toEqual(['a']);
    expect(r.more).toBe(true);
    expect(r.count).toBe('3');
  });

  it('put and delete: prev_kv only when sent; deleted "0" when omitted', () => {
    expect(decodePut({ header })).toEqual({ header });
    expect(decodePut({ header, prev_kv: { key: b64('k'), value: b64('old') } }).prev_kv?.value.toString()).toBe('old');
    expect(decodeDelete({ header })).toEqual({ header, deleted: '0' });
    expect(decodeDelete({ header, deleted: '2' }).deleted).toBe('2');
  });

  it('txn: succeeded false when omitted; each response op decoded, even an empty one', () => {
    const t = decodeTxn({
      header,
      responses: [{ response_range: { header } }, { response_put: { header } }, { response_delete_range: { header } }, {}],
    });
    expect(t.succeeded).toBe(false);
    expect(t.responses).toEqual([
      { response_range: { header, kvs: [], more: false, count: '0' } },
      { response_put: { header } },
      { response_delete_range: { header, deleted: '0' } },
      { response_delete_range: { header: decodeHeader(undefined), deleted: '0' } },
    ]);
    expect(decodeTxn({ header, succeeded: true }).responses).toEqual([]);
  });

  it('watch: an omitted event type is PUT (enum zero), DELETE is delete; flags false and ids "0" when omitted', () => {
    const w = decodeWatch({
      header,
      events: [
        { kv: { key: b64('a'), value: b64('1'), mod_revision: '7' } },
        { type: 'DELETE', kv: { key: b64('a'), mod_revision: '8' }, prev_kv: { key: b64('a'), value: b64('1') } },
      ],
    });
    expect(w).toMatchObject({ watch_id: '0', created: false, canceled: false, compact_revision: '0', cancel_reason: '' });
    expect(w.events.map((e) => [e.type, e.kv.key.toString(), e.kv.mod_revision, e.prev_kv?.value.toString()])).toEqual([
      ['put', 'a', '7', undefined],
      ['delete', 'a', '8', '1'],
    ]);
    expect(decodeWatch({ header, canceled: true, compact_revision: '5' })).toMatchObject({ canceled: true, compact_revision: '5', events: [] });
    expect(decodeWatch({})).toMatchObject({ created: false, events: [], header: { revision: '0' } });
  });
});

describe('EtcdHttpClient options (checked before any connection)', () => {
  it('names the endpoint and the expected form when an endpoint is not an http(s) URL', () => {
    expect(() => new EtcdHttpClient({ endpoints: [] })).toThrow(/at least one endpoint/);
    expect(() => new EtcdHttpClient({ endpoints: ['127.0.0.1:2379'] })).toThrow(/http:\/\/host:port.*"127\.0\.0\.1:2379"/);
    expect(() => new EtcdHttpClient({ endpoints: ['http://ok:2379', 'grpc://etcd:2379'] })).toThrow(/http:\/\/ or https:\/\/, got "grpc:\/\/etcd:2379"/);
    expect(() => new EtcdHttpClient({ endpoints: ['http://[::1]:2379', 'https://etcd.example:2379'] })).not.toThrow();
  });

  it('refuses a client certificate without its key and a key without its certificate', () => {
    const pem = Buffer.from('x');
    expect(() => new EtcdHttpClient({ endpoints: ['https://etcd:2379'], tls: { cert: pem } })).toThrow(/needs its key/);
    expect(() => new EtcdHttpClient({ endpoints: ['https://etcd:2379'], tls: { key: pem } })).toThrow(/certificate/);
  });

  it('a closed client refuses calls and watches with a clear error', async () => {
    const c = new EtcdHttpClient({ endpoints: ['http://127.0.0.1:1'] });
    c.close();
    await expect(c.range({ key: 'k' })).rejects.toThrow(/etcd client is closed/);
    expect(() => c.watch({ key: 'k' })).toThrow(/etcd client is closed/);
  });
});
