// Probe endpoints for kubelet. The local API listens on 127.0.0.1 only, and
// kubelet's httpGet probes dial the pod IP, so probes get their own small
// listener (--health-listen, 0.0.0.0:7071 in a pod) that serves exactly two
// read-only paths and nothing else:
//   GET /healthz  200 while the process is alive and its loop runs (liveness)
//   GET /readyz   200 while registered as a member and both stores answer (readiness)
// Anything else is 404; other methods 405.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from '../lib/log.ts';
import { withTimeout } from '../lib/time.ts';

// Not `import http from 'node:http'`: an ES import of a built-in reads every
// export, and node:http's include WebSocket & co., which load undici, http2,
// tls and worker_threads (~12 MB RSS) that nothing here uses (issue 10).
const http = process.getBuiltinModule('node:http');

export interface ProbeResult {
  ok: boolean;
  /** Why, for a human reading `kubectl describe pod`. */
  detail: string;
}

export interface HealthChecks {
  live: () => ProbeResult;
  ready: () => Promise<ProbeResult>;
}

export interface HealthServer {
  /** host:port actually bound. */
  readonly address: string;
  close(): Promise<void>;
}

/** Bound on a readiness check: under kubelet's default 1 s probe timeout. */
const READY_CHECK_TIMEOUT_MS = 900;

/** Parses HOST:PORT ([v6]:PORT allowed); throws naming the problem. */
export function parseHostPort(value: string): { host: string; port: number } {
  const m = /^(\[[0-9a-fA-F:.]+\]|[^\s:[\]]+):(\d{1,5})$/.exec(value);
  const port = m ? Number(m[2]) : Number.NaN;
  if (!m || port > 65535) throw new Error(`must be HOST:PORT, e.g. 0.0.0.0:7071, got ${JSON.stringify(value)}`);
  return { host: m[1]!.replace(/^\[|\]$/g, ''), port };
}

export async function startHealthServer(opts: { listen: string; checks: HealthChecks; log: Logger }): Promise<HealthServer> {
  const { host, port } = parseHostPort(opts.listen);
  const server = http.createServer((req, res) => {
    void answer(req, res, opts.checks).catch((err: Error) => {
      opts.log.debug({ err: err.message }, 'health probe answer failed');
      if (!res.headersSent) res.writeHead(500);
      res.end();
    });
  });
  // Probes are short; never let a stuck client hold a socket.
  server.requestTimeout = 5000;
  server.headersTimeout = 5000;
  server.keepAliveTimeout = 1000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const bound = server.address() as AddressInfo;
  const address = `${bound.family === 'IPv6' ? `[${bound.address}]` : bound.address}:${bound.port}`;
  opts.log.info({ health: address }, 'serving /healthz and /readyz');
  return {
    address,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

async function answer(req: IncomingMessage, res: ServerResponse, checks: HealthChecks): Promise<void> {
  const path = (req.url ?? '').split('?')[0];
  if (path !== '/healthz' && path !== '/readyz') {
    res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: only /healthz and /readyz are served here\n');
    return;
  }
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain' }).end('method not allowed\n');
    return;
  }
  const result =
    path === '/healthz'
      ? checks.live()
      : await withTimeout(checks.ready(), READY_CHECK_TIMEOUT_MS, 'the readiness check').catch((err: Error) => ({ ok: false, detail: err.message }));
  res.writeHead(result.ok ? 200 : 503, { 'content-type': 'text/plain', 'cache-control': 'no-store' });
  res.end(req.method === 'HEAD' ? undefined : `${result.ok ? 'ok' : 'not ok'}: ${result.detail}\n`);
}
