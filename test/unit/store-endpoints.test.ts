// Store addresses and credentials from a HotStandbyCluster spec and its Secrets: pure logic.
import { describe, expect, it } from 'vitest';
import type { HotStandbyCluster } from '../../src/api/v1alpha1.ts';
import { StoreConfigError, resolveStoreEndpoints, type SecretData } from '../../src/operator/store-endpoints.ts';

const b64 = (s: string): string => Buffer.from(s).toString('base64');
const hsc = (spec: Partial<HotStandbyCluster['spec']>): HotStandbyCluster => ({
  apiVersion: 'hotstandby.dev/v1alpha1',
  kind: 'HotStandbyCluster',
  metadata: { name: 'kv', namespace: 'prod' },
  spec: { master: { image: 'x' }, ...spec },
});
const secrets = (map: Record<string, SecretData>) => async (ns: string, name: string) => map[`${ns}/${name}`];

describe('resolveStoreEndpoints', () => {
  it('managed stores are reached through the Services the operator makes', async () => {
    const e = await resolveStoreEndpoints(hsc({ etcd: { managed: {} }, dragonfly: { managed: {} } }), secrets({}));
    expect(e.etcdEndpoints).toEqual(['http://kv-etcd.prod.svc:2379']);
    expect(e.redisUrl).toBe('redis://kv-dragonfly.prod.svc:6379');
    expect(e.etcdTls).toBeUndefined();
    expect(e.redisPassword).toBeUndefined();
  });

  it('external stores with a TLS Secret and a password Secret', async () => {
    const spec = { etcd: { external: { endpoints: ['https://etcd:2379'], tlsSecret: { name: 'etcd-tls' } } }, dragonfly: { external: { url: 'redis://df:6379', passwordSecret: { name: 'df', key: 'pw' } } } };
    const read = secrets({
      'prod/etcd-tls': { data: { 'ca.crt': b64('CA'), 'tls.crt': b64('CRT'), 'tls.key': b64('KEY') }, resourceVersion: '5' },
      'prod/df': { data: { pw: b64('s3cret') }, resourceVersion: '7' },
    });
    const e = await resolveStoreEndpoints(hsc(spec), read);
    expect(e.etcdEndpoints).toEqual(['https://etcd:2379']);
    expect(e.etcdTls?.ca?.toString()).toBe('CA');
    expect(e.etcdTls?.cert?.toString()).toBe('CRT');
    expect(e.etcdTls?.key?.toString()).toBe('KEY');
    expect(e.redisPassword).toBe('s3cret');
    // A rotated Secret changes the fingerprint, so the clients are remade.
    const rotated = await resolveStoreEndpoints(hsc(spec), secrets({
      'prod/etcd-tls': { data: { 'ca.crt': b64('CA') , 'tls.crt': b64('CRT'), 'tls.key': b64('KEY') }, resourceVersion: '6' },
      'prod/df': { data: { pw: b64('s3cret') }, resourceVersion: '7' },
    }));
    expect(rotated.fingerprint).not.toBe(e.fingerprint);
  });

  it('a missing or incomplete Secret is an error naming the field and the fix', async () => {
    const spec = { etcd: { external: { endpoints: ['https://etcd:2379'], tlsSecret: { name: 'etcd-tls' } } }, dragonfly: { external: { url: 'redis://df:6379' } } };
    await expect(resolveStoreEndpoints(hsc(spec), secrets({}))).rejects.toThrow(/spec\.etcd\.external\.tlsSecret: Secret prod\/etcd-tls does not exist; create it/);
    await expect(resolveStoreEndpoints(hsc(spec), secrets({ 'prod/etcd-tls': { data: { 'tls.crt': b64('x') }, resourceVersion: '1' } }))).rejects.toThrow(/has no ca\.crt/);
    await expect(resolveStoreEndpoints(hsc(spec), secrets({ 'prod/etcd-tls': { data: { 'ca.crt': b64('x'), 'tls.crt': b64('x') }, resourceVersion: '1' } }))).rejects.toThrow(/tls\.crt without tls\.key/);
    const pw = { etcd: { external: { endpoints: ['http://etcd:2379'] } }, dragonfly: { external: { url: 'redis://df:6379', passwordSecret: { name: 'df' } } } };
    const err = await resolveStoreEndpoints(hsc(pw), secrets({ 'prod/df': { data: { other: b64('x') }, resourceVersion: '1' } })).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(StoreConfigError);
    expect((err as StoreConfigError).reason).toBe('SecretInvalid');
    expect((err as Error).message).toMatch(/passwordSecret: Secret prod\/df has no key password; add it or set passwordSecret.key/);
  });
});
