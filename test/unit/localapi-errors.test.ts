// The local API's error table (docs/local-api.md): what a store failure the
// agent cannot do anything about becomes. Pure mapping over real error classes.
import { describe, expect, it } from 'vitest';
import { mapBackendError } from '../../src/agent/localapi/errors.ts';
import { EtcdError, EtcdLeaseNotFoundError, EtcdUnreachableError } from '../../src/lib/etcd-http/client.ts';
import { TimeoutError } from '../../src/lib/time.ts';

function refused(): Error {
  return Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:2379'), { code: 'ECONNREFUSED' });
}

describe('mapBackendError for etcd failures', () => {
  it('etcd unreachable, or unable to serve now, is 503 unavailable (safe to retry)', () => {
    expect(mapBackendError(new EtcdUnreachableError('http://127.0.0.1:2379', refused()))).toMatchObject({ status: 503, body: { error: { code: 'unavailable' } } });
    expect(mapBackendError(new EtcdError('etcdserver: no leader', 14))).toMatchObject({ status: 503, body: { error: { code: 'unavailable' } } });
    expect(mapBackendError(new TimeoutError('etcd range from http://127.0.0.1:2379', 2000))).toMatchObject({ status: 503, body: { error: { code: 'unavailable' } } });
  });

  it('any other answer from etcd stays an internal error', () => {
    expect(mapBackendError(new EtcdError('etcdserver: request is too large', 11))).toMatchObject({ status: 500, body: { error: { code: 'internal' } } });
    expect(mapBackendError(new EtcdLeaseNotFoundError('etcdserver: requested lease not found', 5))).toMatchObject({ status: 500, body: { error: { code: 'internal' } } });
  });
});
