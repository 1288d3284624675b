// How to reach a cluster's stores when they need credentials: etcd over TLS
// (a CA, and a client certificate and key, as in a kubernetes.io/tls Secret
// with ca.crt, tls.crt, tls.key) and a Redis-protocol server with a password,
// optionally over TLS (rediss://). The agent, `hotstandby status` and the
// operator build their clients from the same options object, so all three
// accept the same things.
import type { IOptions as EtcdOptions } from 'etcd3';

const fs = process.getBuiltinModule('node:fs');

/** PEM contents, not paths: the operator reads them from Secrets, the agent from mounted files. */
export interface EtcdTls {
  /** CA that signed etcd's serving certificate; the system roots when absent. */
  ca?: Buffer;
  /** Client certificate and key, for etcd's --client-cert-auth. Both or neither. */
  cert?: Buffer;
  key?: Buffer;
}

export interface StoreCredentials {
  etcdTls?: EtcdTls;
  redisPassword?: string;
  /** CA for a rediss:// server; the system roots when absent. */
  redisCa?: Buffer;
}

/** The etcd3 options that carry the TLS credentials (empty without TLS). */
export function etcdCredentialOptions(tls: EtcdTls | undefined): Pick<EtcdOptions, 'credentials'> {
  if (!tls) return {};
  if (Boolean(tls.cert) !== Boolean(tls.key)) throw new Error('etcd TLS: a client certificate needs its key, and a key its certificate');
  return {
    credentials: {
      // grpc takes null for "the system roots"; etcd3's type says Buffer.
      rootCertificate: tls.ca ?? (null as unknown as Buffer),
      ...(tls.key ? { privateKey: tls.key } : {}),
      ...(tls.cert ? { certChain: tls.cert } : {}),
    },
  };
}

/** What a Redis-protocol client needs besides the URL; ioredis and the agent's RespClient both take this shape. */
export interface RedisCredentialOptions {
  password?: string;
  tls?: { ca: Buffer };
}

/** The client options that carry the password and the TLS CA (empty without them). */
export function redisCredentialOptions(url: string, creds: Pick<StoreCredentials, 'redisPassword' | 'redisCa'>): RedisCredentialOptions {
  const options: RedisCredentialOptions = {};
  if (creds.redisPassword !== undefined) {
    if (urlHasPassword(url)) throw new Error('the stream server URL already has a password; give it in one place only');
    options.password = creds.redisPassword;
  }
  if (creds.redisCa) {
    if (!url.startsWith('rediss://')) throw new Error('a CA for the stream server applies to TLS only: use a rediss:// URL');
    options.tls = { ca: creds.redisCa };
  }
  return options;
}

export function urlHasPassword(url: string): boolean {
  try {
    return new URL(url).password !== '';
  } catch {
    return false;
  }
}

/** The URL with any password replaced by ***, for logs and error messages. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (!u.password) return url;
    u.password = '***';
    return u.toString().replace(/\/$/, url.endsWith('/') ? '/' : '');
  } catch {
    return url.replace(/\/\/[^@/]*@/, '//***@');
  }
}

/** Paths of the credential files, as flags name them. */
export interface StoreCredentialFiles {
  etcdCaFile?: string | undefined;
  etcdCertFile?: string | undefined;
  etcdKeyFile?: string | undefined;
  redisCaFile?: string | undefined;
}

/** Reads the credential files; throws naming the file that cannot be read. */
export function loadStoreCredentials(files: StoreCredentialFiles, redisPassword?: string): StoreCredentials {
  const read = (path: string | undefined): Buffer | undefined => {
    if (!path) return undefined;
    try {
      return fs.readFileSync(path);
    } catch (err) {
      throw new Error(`cannot read ${path}: ${(err as Error).message}`, { cause: err });
    }
  };
  const ca = read(files.etcdCaFile);
  const cert = read(files.etcdCertFile);
  const key = read(files.etcdKeyFile);
  const redisCa = read(files.redisCaFile);
  return {
    ...(ca || cert || key ? { etcdTls: { ...(ca ? { ca } : {}), ...(cert ? { cert } : {}), ...(key ? { key } : {}) } } : {}),
    ...(redisPassword !== undefined ? { redisPassword } : {}),
    ...(redisCa ? { redisCa } : {}),
  };
}

/**
 * Whether a store error says the credentials are wrong (not that the store is
 * down): retrying will not help, so callers fail at once with a message that
 * names the setting to fix.
 */
export function credentialProblem(err: unknown): 'password' | 'tls' | undefined {
  const message = (err as Error | undefined)?.message ?? '';
  if (/WRONGPASS|NOAUTH|invalid password|AUTH <password> called without any password/i.test(message)) return 'password';
  if (/certificate|SSL|TLS|handshake|self[- ]signed|unable to verify|wrong version number/i.test(message)) return 'tls';
  return undefined;
}
