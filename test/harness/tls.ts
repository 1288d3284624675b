// Test certificates for stores that speak TLS, made with openssl (Node can
// parse X.509 but not issue it), as src/devcluster/pki.ts does for the dev
// cluster: a CA, a server certificate for 127.0.0.1 signed by it, a client
// certificate signed by it, a server certificate good for both (etcd's JSON
// gateway under client-certificate auth), and a second, unrelated CA (for
// "wrong CA" tests).
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { findOnPath } from '../../src/lib/childproc.ts';

export interface TestPki {
  caFile: string;
  serverCertFile: string;
  serverKeyFile: string;
  clientCertFile: string;
  clientKeyFile: string;
  /**
   * A server certificate that is also a client certificate (serverAuth and clientAuth). etcd's
   * JSON gateway connects to etcd's own gRPC port with the serving certificate, so under
   * client-certificate auth the gateway works only with such a certificate (etcd 3.5+ can
   * name another one with --client-cert-file).
   */
  dualUseCertFile: string;
  dualUseKeyFile: string;
  /** A CA that signed none of the above. */
  otherCaFile: string;
}

export function makeTestPki(dir: string): TestPki {
  const openssl = findOnPath('openssl');
  if (!openssl) throw new Error('openssl was not found on PATH; TLS tests need it (Debian: apt-get install openssl)');
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const p = (name: string): string => path.join(dir, name);
  const run = (...args: string[]): void => {
    execFileSync(openssl, args, { stdio: ['ignore', 'ignore', 'pipe'], timeout: 30_000 });
  };
  const ca = (name: string): void =>
    run('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', p(`${name}.key`), '-out', p(`${name}.crt`), '-days', '30', '-subj', `/CN=${name}`);
  const leaf = (name: string, ext: string): void => {
    fs.writeFileSync(p(`${name}.ext`), ext);
    run('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', p(`${name}.key`), '-out', p(`${name}.csr`), '-subj', `/CN=${name}`);
    run('x509', '-req', '-in', p(`${name}.csr`), '-CA', p('ca.crt'), '-CAkey', p('ca.key'), '-CAcreateserial', '-out', p(`${name}.crt`), '-days', '30', '-extfile', p(`${name}.ext`));
  };
  ca('ca');
  ca('other-ca');
  leaf('server', 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n');
  leaf('client', 'extendedKeyUsage=clientAuth\n');
  leaf('dual-use', 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n');
  return {
    caFile: p('ca.crt'),
    serverCertFile: p('server.crt'),
    serverKeyFile: p('server.key'),
    clientCertFile: p('client.crt'),
    clientKeyFile: p('client.key'),
    dualUseCertFile: p('dual-use.crt'),
    dualUseKeyFile: p('dual-use.key'),
    otherCaFile: p('other-ca.crt'),
  };
}
