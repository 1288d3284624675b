// Where a cluster's etcd and stream server are, and the credentials to reach
// them, from its spec and the Secrets it names. Managed stores are reached
// through the Services the operator makes for them (names from the builders,
// so the operator dials exactly what the agents are given).
import type { HotStandbyCluster } from '../api/v1alpha1.ts';
import { managedDragonflyUrl, managedEtcdUrl } from './builders/names.ts';
import type { StoreEndpoints } from './store-clients.ts';

export interface SecretData {
  /** base64 values, as the API returns them. */
  data: Record<string, string>;
  resourceVersion: string;
}

export type ReadSecret = (namespace: string, name: string) => Promise<SecretData | undefined>;

/** A problem a user fixes in the spec or a Secret; the message names the field and the fix. */
export class StoreConfigError extends Error {
  readonly reason: string;
  constructor(reason: string, message: string) {
    super(message);
    this.name = 'StoreConfigError';
    this.reason = reason;
  }
}

export async function resolveStoreEndpoints(hsc: HotStandbyCluster, readSecret: ReadSecret): Promise<StoreEndpoints> {
  const name = hsc.metadata.name;
  const namespace = hsc.metadata.namespace ?? 'default';
  const etcdExt = hsc.spec.etcd?.external;
  const dfExt = hsc.spec.dragonfly?.external;
  const out: StoreEndpoints = {
    etcdEndpoints: etcdExt ? etcdExt.endpoints : [managedEtcdUrl(name, namespace)],
    redisUrl: dfExt ? dfExt.url : managedDragonflyUrl(name, namespace),
    fingerprint: '',
  };
  const versions: string[] = [];
  if (etcdExt?.tlsSecret) {
    const secretName = etcdExt.tlsSecret.name;
    const secret = await readSecret(namespace, secretName);
    if (!secret) throw new StoreConfigError('SecretMissing', `spec.etcd.external.tlsSecret: Secret ${namespace}/${secretName} does not exist; create it with ca.crt (and tls.crt, tls.key for client certificates)`);
    const ca = secret.data['ca.crt'];
    if (!ca) throw new StoreConfigError('SecretInvalid', `spec.etcd.external.tlsSecret: Secret ${namespace}/${secretName} has no ca.crt; add the CA that signed etcd's serving certificate`);
    const cert = secret.data['tls.crt'];
    const key = secret.data['tls.key'];
    if (Boolean(cert) !== Boolean(key)) {
      throw new StoreConfigError('SecretInvalid', `spec.etcd.external.tlsSecret: Secret ${namespace}/${secretName} has ${cert ? 'tls.crt without tls.key' : 'tls.key without tls.crt'}; give both or neither`);
    }
    out.etcdTls = { ca: Buffer.from(ca, 'base64'), ...(cert && key ? { cert: Buffer.from(cert, 'base64'), key: Buffer.from(key, 'base64') } : {}) };
    versions.push(`etcd-tls:${secret.resourceVersion}`);
  }
  if (dfExt?.passwordSecret) {
    const { name: secretName, key = 'password' } = dfExt.passwordSecret;
    const secret = await readSecret(namespace, secretName);
    if (!secret) throw new StoreConfigError('SecretMissing', `spec.dragonfly.external.passwordSecret: Secret ${namespace}/${secretName} does not exist; create it with the server's password under key ${key}`);
    const value = secret.data[key];
    if (value === undefined) throw new StoreConfigError('SecretInvalid', `spec.dragonfly.external.passwordSecret: Secret ${namespace}/${secretName} has no key ${key}; add it or set passwordSecret.key`);
    out.redisPassword = Buffer.from(value, 'base64').toString('utf8');
    versions.push(`redis-password:${secret.resourceVersion}`);
  }
  out.fingerprint = JSON.stringify([out.etcdEndpoints, out.redisUrl, versions]);
  return out;
}
