// Keys and certificates for a local kube-apiserver, made with openssl (Node can
// parse X.509 but not issue it): a CA, a serving certificate for 127.0.0.1 and
// localhost signed by it, and the service-account signing key pair.
import { execFileSync } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { findOnPath } from '../lib/childproc.ts';

export interface Pki {
  caCert: string;
  caKey: string;
  servingCert: string;
  servingKey: string;
  serviceAccountKey: string;
  serviceAccountPub: string;
}

/** `extraIps`: more addresses the API server is reached at (the real node's bridge). */
export function makePki(dir: string, extraIps: readonly string[] = []): Pki {
  const openssl = findOnPath('openssl');
  if (!openssl) throw new Error('openssl was not found on PATH; the dev cluster needs it to make certificates (Debian: apt-get install openssl)');
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const p = (name: string): string => path.join(dir, name);
  const run = (...args: string[]): void => {
    execFileSync(openssl, args, { stdio: ['ignore', 'ignore', 'pipe'], timeout: 30_000 });
  };
  run('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', p('ca.key'), '-out', p('ca.crt'), '-days', '3650', '-subj', '/CN=hotstandby-dev-ca');
  fs.writeFileSync(p('serving.ext'), `subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:10.96.0.1${extraIps.map((ip) => `,IP:${ip}`).join('')}\nextendedKeyUsage=serverAuth\n`);
  run('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', p('serving.key'), '-out', p('serving.csr'), '-subj', '/CN=kube-apiserver');
  run('x509', '-req', '-in', p('serving.csr'), '-CA', p('ca.crt'), '-CAkey', p('ca.key'), '-CAcreateserial', '-out', p('serving.crt'), '-days', '3650', '-extfile', p('serving.ext'));
  const sa = generateKeyPairSync('rsa', { modulusLength: 2048 });
  fs.writeFileSync(p('sa.key'), sa.privateKey.export({ type: 'pkcs1', format: 'pem' }), { mode: 0o600 });
  fs.writeFileSync(p('sa.pub'), sa.publicKey.export({ type: 'spki', format: 'pem' }));
  return { caCert: p('ca.crt'), caKey: p('ca.key'), servingCert: p('serving.crt'), servingKey: p('serving.key'), serviceAccountKey: p('sa.key'), serviceAccountPub: p('sa.pub') };
}

/**
 * A client certificate signed by the cluster's CA: `cn` is the user name and
 * `org` its group (system:nodes for a kubelet, system:masters for the API
 * server's calls to kubelets). Returns the certificate and key paths.
 */
export function signClientCert(pki: Pki, dir: string, file: string, cn: string, org: string): { cert: string; key: string } {
  const openssl = findOnPath('openssl');
  if (!openssl) throw new Error('openssl was not found on PATH; the dev cluster needs it to make certificates (Debian: apt-get install openssl)');
  const p = (ext: string): string => path.join(dir, `${file}.${ext}`);
  const run = (...args: string[]): void => {
    execFileSync(openssl, args, { stdio: ['ignore', 'ignore', 'pipe'], timeout: 30_000 });
  };
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  fs.writeFileSync(p('ext'), 'extendedKeyUsage=clientAuth\n');
  run('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', p('key'), '-out', p('csr'), '-subj', `/O=${org}/CN=${cn}`);
  run('x509', '-req', '-in', p('csr'), '-CA', pki.caCert, '-CAkey', pki.caKey, '-CAcreateserial', '-out', p('crt'), '-days', '3650', '-extfile', p('ext'));
  fs.chmodSync(p('key'), 0o600);
  return { cert: p('crt'), key: p('key') };
}
