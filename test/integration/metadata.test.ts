import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EtcdHttpClient } from '../../src/lib/etcd-http/client.ts';
import { useStores } from '../harness/stores.ts';
import { MetadataInputError, MetadataStore, validateMetaKey } from '../../src/agent/metadata.ts';
import { etcdKeys } from '../../src/lib/keys.ts';
import { silentLogger } from '../../src/lib/log.ts';

describe('validateMetaKey', () => {
  it('accepts 1-512 characters of the allowed set', () => {
    expect(validateMetaKey('a')).toBeUndefined();
    expect(validateMetaKey('seg/ment.v1~x_y-z')).toBeUndefined();
    expect(validateMetaKey('k'.repeat(512))).toBeUndefined();
  });

  it('names the problem for empty, long and foreign keys', () => {
    expect(validateMetaKey('')).toMatch(/1-512 characters/);
    expect(validateMetaKey('k'.repeat(513))).toMatch(/at most 512.*513/);
    expect(validateMetaKey('a b')).toMatch(/" "/);
    expect(validateMetaKey('caf\u00e9')).toMatch(/"\u00e9"/);
    expect(validateMetaKey('a?b')).toMatch(/"\?"/);
  });
});

describe('MetadataStore against a real etcd', () => {
  const stores = useStores();
  let etcd: EtcdHttpClient;
  let other: EtcdHttpClient;
  const keys = etcdKeys({ namespace: 'ns', name: 'meta' });
  let store: MetadataStore;
  let otherStore: MetadataStore;

  beforeAll(() => {
    etcd = new EtcdHttpClient({ endpoints: [stores().etcd.endpoint] });
    other = new EtcdHttpClient({ endpoints: [stores().etcd.endpoint] });
    store = new MetadataStore({ etcd, keys, log: silentLogger() });
    otherStore = new MetadataStore({ etcd: other, keys, log: silentLogger() });
  });
  afterAll(() => {
    etcd.close();
    other.close();
  });

  it('puts, gets with revision and version, and deletes', async () => {
    expect(await store.get('plain')).toBeUndefined();
    const first = await store.put('plain', 'v1');
    expect(first.ok).toBe(true);
    const got = await store.get('plain');
    expect(got).toEqual({ key: 'plain', value: 'v1', modRevision: first.ok ? first.modRevision : -1, version: 1 });
    const second = await store.put('plain', 'v2');
    expect(second.ok && first.ok && second.modRevision > first.modRevision).toBe(true);
    expect((await store.get('plain'))?.version).toBe(2);
    // Stored where the key layout says, so the operator and etcdctl find it.
    expect(await etcd.getString(keys.meta('plain'))).toBe('v2');
    expect(await store.delete('plain')).toBe('deleted');
    expect(await store.delete('plain')).toBe('absent');
    expect(await store.get('plain')).toBeUndefined();
  });

  it('compare-and-set: succeeds on the current revision, refuses a stale one with the current revision', async () => {
    const a = await store.put('cas', 'a');
    if (!a.ok) throw new Error('unconditional put failed');
    const b = await store.put('cas', 'b', a.modRevision);
    expect(b.ok).toBe(true);
    const stale = await store.put('cas', 'c', a.modRevision);
    expect(stale).toEqual({ ok: false, currentModRevision: b.ok ? b.modRevision : -1 });
    expect((await store.get('cas'))?.value).toBe('b');
  });

  it('create-only (expected 0) writes an absent key once and then refuses', async () => {
    const created = await store.put('once', 'first', 0);
    expect(created.ok).toBe(true);
    const again = await store.put('once', 'second', 0);
    expect(again).toEqual({ ok: false, currentModRevision: created.ok ? created.modRevision : -1 });
    expect((await store.get('once'))?.value).toBe('first');
    // A CAS naming a revision on an absent key answers "absent" as revision 0.
    expect(await store.put('never-written', 'x', 5)).toEqual({ ok: false, currentModRevision: 0 });
    expect(await store.get('never-written')).toBeUndefined();
  });

  it('two writers racing on the same expected revision: exactly one wins, every time', async () => {
    for (let round = 0; round < 20; round++) {
      const base = await store.put('race', `base-${round}`);
      if (!base.ok) throw new Error('unconditional put failed');
      const [x, y] = await Promise.all([
        store.put('race', `x-${round}`, base.modRevision),
        otherStore.put('race', `y-${round}`, base.modRevision),
      ]);
      const winners = [x, y].filter((r) => r.ok);
      expect(winners).toHaveLength(1);
      const winner = winners[0]!;
      const loser = x.ok ? y : x;
      expect(loser).toEqual({ ok: false, currentModRevision: winner.ok ? winner.modRevision : -1 });
      expect((await store.get('race'))?.value).toBe(x.ok ? `x-${round}` : `y-${round}`);
    }
  });

  it('two creators racing with expected 0: exactly one creates the key', async () => {
    for (let round = 0; round < 10; round++) {
      const key = `create-race-${round}`;
      const [x, y] = await Promise.all([store.put(key, 'x', 0), otherStore.put(key, 'y', 0)]);
      expect([x, y].filter((r) => r.ok)).toHaveLength(1);
    }
  });

  it('delete with a stale revision is refused and leaves the key; with the current one it deletes', async () => {
    const v1 = await store.put('del', '1');
    const v2 = await store.put('del', '2');
    if (!v1.ok || !v2.ok) throw new Error('unconditional put failed');
    expect(await store.delete('del', v1.modRevision)).toEqual({ conflict: v2.modRevision });
    expect((await store.get('del'))?.value).toBe('2');
    expect(await store.delete('del', v2.modRevision)).toBe('deleted');
    expect(await store.delete('del', v2.modRevision)).toBe('absent');
  });

  it('lists by prefix in key order, bounded by limit, without other clusters\' keys', async () => {
    const foreign = new MetadataStore({ etcd, keys: etcdKeys({ namespace: 'ns', name: 'meta2' }), log: silentLogger() });
    await foreign.put('list/a', 'foreign');
    for (const k of ['list/c', 'list/a', 'list/b', 'listing']) await store.put(k, k.toUpperCase());
    const listed = await store.list('list/');
    expect(listed.map((e) => [e.key, e.value])).toEqual([
      ['list/a', 'LIST/A'],
      ['list/b', 'LIST/B'],
      ['list/c', 'LIST/C'],
    ]);
    expect((await store.list('list/', 2)).map((e) => e.key)).toEqual(['list/a', 'list/b']);
    expect((await store.list()).some((e) => e.key === 'listing')).toBe(true);
  });

  it('refuses bad input naming the field, and changes nothing', async () => {
    const before = (await etcd.range({ key: keys.metaPrefix, prefix: true })).kvs.length;
    await expect(store.put('bad key', 'v')).rejects.toThrow(/key may contain only/);
    await expect(store.put('ok', 'v', -1)).rejects.toThrow(/expectedModRevision must be an integer >= 0/);
    await expect(store.put('ok', 'v', 1.5)).rejects.toBeInstanceOf(MetadataInputError);
    await expect(store.put('ok', 'x'.repeat(1024 * 1024 + 1))).rejects.toThrow(/value must be at most/);
    await expect(store.delete('', 3)).rejects.toThrow(/empty key/);
    await expect(store.list('a b')).rejects.toThrow(/prefix/);
    await expect(store.list('', 0)).rejects.toThrow(/limit must be an integer from 1 to 10000/);
    const err = await store.get('k'.repeat(600)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(MetadataInputError);
    expect((err as MetadataInputError).field).toBe('key');
    expect((await etcd.range({ key: keys.metaPrefix, prefix: true })).kvs.length).toBe(before);
    expect(await store.get('ok')).toBeUndefined();
  });
});
