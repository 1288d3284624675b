// The local API's HTTP server: routing, bounded body reading, validation
// (validate.ts), error mapping (errors.ts) and NDJSON streaming with
// backpressure. It holds no state of its own beyond open connections, so
// close() can end every long-poll and stream and return within a bound.
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Logger } from '../../lib/log.ts';
import type { LocalApiBackend } from './backend.ts';
import { httpError, mapBackendError, type HttpError } from './errors.ts';
import { MASTER_INSTANCE_HEADER, MASTER_INSTANCE_PATTERN } from '../master-session.ts';
import {
  checkAppendBody,
  checkAppliedBody,
  checkDeleteBody,
  checkDeletesQuery,
  checkMetaDeleteQuery,
  checkMetaKey,
  checkMetaPutBody,
  checkNoQuery,
  checkRoleQuery,
  checkSnapshotQuery,
  checkStreamQuery,
  type Checked,
} from './validate.ts';

// Not `import http from 'node:http'`: an ES import of a built-in reads every
// export, and node:http's include WebSocket & co., which load undici, http2,
// tls and worker_threads (~12 MB RSS) that nothing here uses (issue 10).
const http = process.getBuiltinModule('node:http');
// Not node:fs/promises either: it loads node:readline and its history (for
// FileHandle.readLines), for three calls made once per start.
const fs = process.getBuiltinModule('node:fs');
const { promisify } = process.getBuiltinModule('node:util');
const lstat = promisify(fs.lstat);
const unlink = promisify(fs.unlink);
const chmod = promisify(fs.chmod);

export const APPEND_BODY_LIMIT = 8 * 1024 * 1024;
export const SNAPSHOT_BODY_LIMIT = 1024 * 1024 * 1024;
/** Small JSON bodies (applied, deletes, meta): a metadata value may be 1 MiB; JSON escaping can double it. */
export const SMALL_BODY_LIMIT = 4 * 1024 * 1024;
/** A body must arrive within this long of the last chunk; a stalled client does not pin a request. */
export const BODY_IDLE_TIMEOUT_MS = 10_000;
/** close() ends streams at once, then waits this long for answers in flight before cutting sockets. */
export const CLOSE_GRACE_MS = 2000;

export interface LocalApiOptions {
  /** "127.0.0.1:7070", "[::1]:7070" or "unix:/path/to.sock". Port 0 picks a free port. */
  listen: string;
  backend: LocalApiBackend;
  log: Logger;
}

export interface LocalApiServer {
  /** "host:port" for TCP, "unix:/path" for a Unix socket. */
  readonly address: string;
  close(): Promise<void>;
}

type Method = 'GET' | 'POST' | 'PUT' | 'DELETE';

interface RequestContext {
  req: IncomingMessage;
  res: ServerResponse;
  query: URLSearchParams;
  /** The path parameter of /v1/meta/{key}, still percent-encoded. */
  param: string;
  /** Aborted when the client goes away or the server closes. */
  signal: AbortSignal;
  backend: LocalApiBackend;
  log: Logger;
}

type Handler = (ctx: RequestContext) => Promise<void>;

export interface RouteSpec {
  method: Method;
  /** OpenAPI-style path template. */
  path: string;
}

interface Route extends RouteSpec {
  handler: Handler;
}

// ---------------------------------------------------------------- helpers

class RequestError extends Error {
  readonly http: HttpError;
  constructor(e: HttpError) {
    super(e.body.error.message);
    this.http = e;
  }
}

function must<T>(c: Checked<T>): T {
  if (!c.ok) throw new RequestError(httpError(400, 'bad_request', c.message, { field: c.field }));
  return c.value;
}

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-store' });
  res.end(text);
}

function sendEmpty(res: ServerResponse, status: number): void {
  res.writeHead(status);
  res.end();
}

/**
 * Reads the whole body, refusing more than `limit` bytes (413) and a body that
 * stalls for BODY_IDLE_TIMEOUT_MS (400). Resolves only with a complete body.
 */
function readBody(req: IncomingMessage, limit: number, signal: AbortSignal): Promise<Buffer> {
  const declared = req.headers['content-length'];
  if (declared !== undefined && Number(declared) > limit) {
    return Promise.reject(new RequestError(httpError(413, 'too_large', `body of ${declared} bytes is over the limit of ${limit} bytes`)));
  }
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let timer = setTimeout(onIdle, BODY_IDLE_TIMEOUT_MS);
    const cleanup = (): void => {
      clearTimeout(timer);
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('error', onError);
      signal.removeEventListener('abort', onAbort);
    };
    function onIdle(): void {
      cleanup();
      reject(new RequestError(httpError(400, 'bad_request', `the body did not arrive within ${BODY_IDLE_TIMEOUT_MS} ms`, { field: 'body' })));
    }
    function onData(chunk: Buffer): void {
      size += chunk.length;
      if (size > limit) {
        cleanup();
        reject(new RequestError(httpError(413, 'too_large', `body is over the limit of ${limit} bytes`)));
        return;
      }
      chunks.push(chunk);
      clearTimeout(timer);
      timer = setTimeout(onIdle, BODY_IDLE_TIMEOUT_MS);
    }
    function onEnd(): void {
      cleanup();
      resolve(Buffer.concat(chunks, size));
    }
    function onError(err: Error): void {
      cleanup();
      reject(err);
    }
    function onAbort(): void {
      cleanup();
      reject(new Error('request aborted while reading the body'));
    }
    if (signal.aborted) return onAbort();
    req.on('data', onData);
    req.on('end', onEnd);
    req.on('error', onError);
    signal.addEventListener('abort', onAbort, { once: true });
  });
}

async function readJson(ctx: RequestContext, limit: number): Promise<unknown> {
  const raw = await readBody(ctx.req, limit, ctx.signal);
  if (raw.length === 0) throw new RequestError(httpError(400, 'bad_request', 'a JSON body is required', { field: 'body' }));
  try {
    return JSON.parse(raw.toString('utf8')) as unknown;
  } catch (err) {
    throw new RequestError(httpError(400, 'bad_request', `body is not valid JSON: ${(err as Error).message}`, { field: 'body' }));
  }
}

/** Resolves when the response can take more, or when the request ends (client gone / server closing). */
function drained(res: ServerResponse, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      res.off('drain', done);
      res.off('close', done);
      signal.removeEventListener('abort', done);
      resolve();
    };
    res.on('drain', done);
    res.on('close', done);
    signal.addEventListener('abort', done, { once: true });
  });
}

/**
 * Streams `lines` as NDJSON until the iterator ends, the client disconnects or
 * the server closes. Waits for 'drain' whenever the socket buffer is full so a
 * slow master never makes the agent buffer the log in memory.
 */
async function streamNdjson(ctx: RequestContext, lines: AsyncIterable<unknown>): Promise<void> {
  const { res, signal } = ctx;
  const iterator = lines[Symbol.asyncIterator]();
  let headersSent = false;
  try {
    while (!signal.aborted) {
      const next = await iterator.next();
      if (next.done || signal.aborted) break;
      if (!headersSent) {
        res.writeHead(200, { 'content-type': 'application/x-ndjson', 'cache-control': 'no-store', 'x-content-type-options': 'nosniff' });
        headersSent = true;
      }
      if (!res.write(JSON.stringify(next.value) + '\n')) await drained(res, signal);
    }
  } catch (err) {
    // Before the first line the client still gets a proper error answer.
    if (!headersSent) throw err;
    const mapped = mapBackendError(err);
    ctx.log.warn({ code: mapped.body.error.code, err: mapped.body.error.message }, 'stream ended by an error');
    res.destroy();
    return;
  } finally {
    // Ends the backend's subscription even when we stop early.
    await iterator.return?.().catch(() => undefined);
  }
  if (!headersSent && !signal.aborted) {
    res.writeHead(200, { 'content-type': 'application/x-ndjson', 'cache-control': 'no-store' });
  }
  if (!res.writableEnded && !res.destroyed) res.end();
}

// ---------------------------------------------------------------- handlers

const handlers = {
  async health(ctx: RequestContext): Promise<void> {
    must(checkNoQuery(ctx.query));
    const h = await ctx.backend.health();
    const s = ctx.backend.status();
    const up = h.etcd === 'ok' && h.stream === 'ok';
    sendJson(ctx.res, up ? 200 : 503, { status: up ? 'ok' : 'degraded', member: ctx.backend.member, role: s.role, etcd: h.etcd, stream: h.stream });
  },

  async role(ctx: RequestContext): Promise<void> {
    const q = must(checkRoleQuery(ctx.query));
    const now = ctx.backend.status();
    if (q.after === undefined || q.after !== now.version || q.timeoutMs === 0) {
      sendJson(ctx.res, 200, now);
      return;
    }
    let status;
    try {
      status = await ctx.backend.waitForStatusChange(q.after, q.timeoutMs, ctx.signal);
    } catch (err) {
      // The server is closing (or the client left): answer with what is true now.
      if (!ctx.signal.aborted) throw err;
      status = ctx.backend.status();
    }
    if (!ctx.res.destroyed) sendJson(ctx.res, 200, status);
  },

  async append(ctx: RequestContext): Promise<void> {
    must(checkNoQuery(ctx.query));
    const entries = must(checkAppendBody(await readJson(ctx, APPEND_BODY_LIMIT)));
    sendJson(ctx.res, 200, await ctx.backend.append(entries));
  },

  async stream(ctx: RequestContext): Promise<void> {
    const { from } = must(checkStreamQuery(ctx.query));
    await streamNdjson(ctx, ctx.backend.streamEntries(from, ctx.signal));
  },

  async applied(ctx: RequestContext): Promise<void> {
    must(checkNoQuery(ctx.query));
    const seq = must(checkAppliedBody(await readJson(ctx, SMALL_BODY_LIMIT)));
    ctx.backend.ackApplied(seq);
    sendEmpty(ctx.res, 204);
  },

  async putSnapshot(ctx: RequestContext): Promise<void> {
    const { seq } = must(checkSnapshotQuery(ctx.query));
    const data = await readBody(ctx.req, SNAPSHOT_BODY_LIMIT, ctx.signal);
    sendJson(ctx.res, 201, await ctx.backend.putSnapshot(seq, data));
  },

  async getSnapshot(ctx: RequestContext): Promise<void> {
    must(checkNoQuery(ctx.query));
    const snap = await ctx.backend.getSnapshot();
    if (!snap) throw new RequestError(httpError(404, 'not_found', 'no snapshot has been stored yet'));
    const d = snap.descriptor;
    ctx.res.writeHead(200, {
      'content-type': 'application/octet-stream',
      'content-length': snap.data.length,
      'x-snapshot-id': d.id,
      'x-snapshot-seq': String(d.seq),
      'x-snapshot-epoch': String(d.epoch),
      'x-snapshot-crc32c': String(d.crc),
    });
    ctx.res.end(snap.data);
  },

  async publishDelete(ctx: RequestContext): Promise<void> {
    must(checkNoQuery(ctx.query));
    const { key, payload } = must(checkDeleteBody(await readJson(ctx, SMALL_BODY_LIMIT)));
    sendJson(ctx.res, 201, await ctx.backend.publishDelete(key, payload));
  },

  async deletes(ctx: RequestContext): Promise<void> {
    const { fromRevision } = must(checkDeletesQuery(ctx.query));
    await streamNdjson(ctx, ctx.backend.subscribeDeletes(fromRevision, ctx.signal));
  },

  async metaGet(ctx: RequestContext): Promise<void> {
    const key = must(checkMetaKey(ctx.param));
    must(checkNoQuery(ctx.query));
    const v = await ctx.backend.metaGet(key);
    if (!v) throw new RequestError(httpError(404, 'not_found', `no metadata under ${JSON.stringify(key)}`));
    sendJson(ctx.res, 200, v);
  },

  async metaPut(ctx: RequestContext): Promise<void> {
    const key = must(checkMetaKey(ctx.param));
    must(checkNoQuery(ctx.query));
    const body = must(checkMetaPutBody(await readJson(ctx, SMALL_BODY_LIMIT)));
    const r = await ctx.backend.metaPut(key, body.value, body.expectedModRevision);
    if (!r.ok) {
      throw new RequestError(
        httpError(409, 'conflict', `${key} is at mod revision ${r.currentModRevision}, not ${body.expectedModRevision}`, {
          currentModRevision: r.currentModRevision,
        }),
      );
    }
    sendJson(ctx.res, 200, { modRevision: r.modRevision });
  },

  async metaDelete(ctx: RequestContext): Promise<void> {
    const key = must(checkMetaKey(ctx.param));
    const { expectedModRevision } = must(checkMetaDeleteQuery(ctx.query));
    const r = await ctx.backend.metaDelete(key, expectedModRevision);
    if (r === 'deleted') return sendEmpty(ctx.res, 204);
    if (r === 'absent') throw new RequestError(httpError(404, 'not_found', `no metadata under ${JSON.stringify(key)}`));
    throw new RequestError(
      httpError(409, 'conflict', `${key} is at mod revision ${r.conflict}, not ${expectedModRevision}`, { currentModRevision: r.conflict }),
    );
  },
};

const META_PREFIX = '/v1/meta/';

const ROUTES: readonly Route[] = [
  { method: 'GET', path: '/v1/health', handler: handlers.health },
  { method: 'GET', path: '/v1/role', handler: handlers.role },
  { method: 'POST', path: '/v1/log/append', handler: handlers.append },
  { method: 'GET', path: '/v1/log/stream', handler: handlers.stream },
  { method: 'POST', path: '/v1/applied', handler: handlers.applied },
  { method: 'PUT', path: '/v1/snapshot', handler: handlers.putSnapshot },
  { method: 'GET', path: '/v1/snapshot', handler: handlers.getSnapshot },
  { method: 'POST', path: '/v1/deletes', handler: handlers.publishDelete },
  { method: 'GET', path: '/v1/deletes', handler: handlers.deletes },
  { method: 'GET', path: '/v1/meta/{key}', handler: handlers.metaGet },
  { method: 'PUT', path: '/v1/meta/{key}', handler: handlers.metaPut },
  { method: 'DELETE', path: '/v1/meta/{key}', handler: handlers.metaDelete },
];

/** Every route the server answers, for the OpenAPI cross-check. */
export const ROUTE_TABLE: readonly RouteSpec[] = ROUTES.map(({ method, path }) => ({ method, path }));

/** The routes for a request path, and the path parameter when it has one. */
function match(pathname: string): { routes: Route[]; param: string } {
  if (pathname.startsWith(META_PREFIX)) {
    return { routes: ROUTES.filter((r) => r.path === '/v1/meta/{key}'), param: pathname.slice(META_PREFIX.length) };
  }
  return { routes: ROUTES.filter((r) => r.path === pathname), param: '' };
}

// ---------------------------------------------------------------- server

/** The X-Master-Instance header: absent, or a token of MASTER_INSTANCE_PATTERN (400 otherwise). */
function masterInstance(req: IncomingMessage): string | undefined {
  const raw = req.headers[MASTER_INSTANCE_HEADER];
  if (raw === undefined) return undefined;
  if (typeof raw !== 'string' || !MASTER_INSTANCE_PATTERN.test(raw)) {
    throw new RequestError(
      httpError(400, 'bad_request', `X-Master-Instance must be 1-128 characters of [A-Za-z0-9._:-] (a new value each time the master starts), got ${JSON.stringify(String(raw).slice(0, 40))}`, {
        field: 'X-Master-Instance',
      }),
    );
  }
  return raw;
}

function parseListen(listen: string): { path: string } | { host: string; port: number } {
  if (listen.startsWith('unix:')) {
    const path = listen.slice('unix:'.length);
    if (!path.startsWith('/')) throw new Error(`--api-listen ${listen}: a Unix socket needs an absolute path, e.g. unix:/run/hotstandby/api.sock`);
    return { path };
  }
  const m = /^(\[[0-9a-fA-F:.]+\]|[^:[\]]+):([0-9]{1,5})$/.exec(listen);
  const port = m ? Number(m[2]) : Number.NaN;
  if (!m || port > 65535) throw new Error(`--api-listen ${listen}: expected host:port (e.g. 127.0.0.1:7070) or unix:/path`);
  return { host: m[1]!.replace(/^\[|\]$/g, ''), port };
}

/** Removes a socket file left by a previous run; refuses to delete anything that is not a socket. */
async function removeStaleSocket(path: string): Promise<void> {
  let st;
  try {
    st = await lstat(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  }
  if (!st.isSocket()) throw new Error(`--api-listen unix:${path}: the path exists and is not a socket; not removing it`);
  await unlink(path);
}

export async function startLocalApi(opts: LocalApiOptions): Promise<LocalApiServer> {
  const target = parseListen(opts.listen);
  const log = opts.log.child({ module: 'localapi' });
  const sockets = new Set<Socket>();
  const inFlight = new Set<AbortController>();
  let closing = false;

  const server = http.createServer((req, res) => {
    void handle(req, res);
  });
  // Long-polls and streams are bounded by their own logic, not by Node's defaults.
  server.requestTimeout = 0;
  server.headersTimeout = 10_000;
  server.keepAliveTimeout = 5000;
  server.on('connection', (socket: Socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  });

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const started = Date.now();
    const controller = new AbortController();
    inFlight.add(controller);
    // 'close' on the response fires when it finished or when the client went away.
    res.once('close', () => {
      controller.abort(new Error('request ended'));
      inFlight.delete(controller);
    });
    const url = new URL(req.url ?? '/', 'http://localapi');
    const method = req.method ?? 'GET';
    const reqLog = log.child({ method, path: url.pathname });
    try {
      if (closing) throw new RequestError(httpError(503, 'unavailable', 'the agent is shutting down'));
      const { routes, param } = match(url.pathname);
      if (routes.length === 0) throw new RequestError(httpError(404, 'not_found', `no endpoint ${url.pathname}`));
      const route = routes.find((r) => r.method === method);
      if (!route) {
        res.setHeader('allow', routes.map((r) => r.method).join(', '));
        throw new RequestError(httpError(405, 'method_not_allowed', `${method} is not allowed on ${url.pathname}; allowed: ${routes.map((r) => r.method).join(', ')}`));
      }
      if (route.path !== '/v1/health') {
        // Every request but the health probe comes from the master and shows
        // it alive while it is open (MasterSession); 'close' ends it, also
        // when the master's process dies and the kernel closes its socket.
        const release = opts.backend.masterRequest(masterInstance(req));
        // A role long-poll closed before its answer was written: the master
        // dropped it, which a live master never does (the crash signal).
        const ended = (): void => release(route.path === '/v1/role' && !res.writableFinished);
        if (res.closed) ended();
        else res.once('close', ended);
      }
      await route.handler({ req, res, query: url.searchParams, param, signal: controller.signal, backend: opts.backend, log: reqLog });
    } catch (err) {
      const e = err instanceof RequestError ? err.http : mapBackendError(err);
      // 404 is routine (a master asks for a snapshot before one exists): debug, not warn.
      reqLog[e.status === 404 ? 'debug' : 'warn']({ status: e.status, code: e.body.error.code, field: e.body.error.field, err: e.body.error.message }, 'request refused');
      if (!res.headersSent && !res.destroyed) {
        // A body we refused to read must not be parsed as the next request on this connection.
        if (!req.complete) res.setHeader('connection', 'close');
        sendJson(res, e.status, e.body);
      } else if (!res.writableEnded) {
        res.destroy();
      }
    } finally {
      reqLog.debug({ status: res.statusCode, ms: Date.now() - started }, 'request');
    }
  }

  await new Promise<void>((resolve, reject) => {
    const onError = (err: Error): void => reject(err);
    server.once('error', onError);
    const listening = (): void => {
      server.off('error', onError);
      resolve();
    };
    if ('path' in target) {
      removeStaleSocket(target.path).then(() => server.listen(target.path, listening), reject);
    } else {
      server.listen(target.port, target.host, listening);
    }
  });
  server.on('error', (err) => log.warn({ err: err.message }, 'local API server error'));

  let address: string;
  if ('path' in target) {
    // Only the master's user may talk to its agent.
    await chmod(target.path, 0o600);
    address = `unix:${target.path}`;
  } else {
    const a = server.address();
    const port = typeof a === 'object' && a ? a.port : target.port;
    address = target.host.includes(':') ? `[${target.host}]:${port}` : `${target.host}:${port}`;
  }
  log.info({ address }, 'local API listening');

  let closed: Promise<void> | undefined;
  return {
    address,
    close(): Promise<void> {
      closed ??= (async () => {
        closing = true;
        const serverClosed = new Promise<void>((resolve) => server.close(() => resolve()));
        // Long-polls answer and streams end now; plain requests get a moment to finish.
        for (const c of inFlight) c.abort(new Error('local API closing'));
        server.closeIdleConnections();
        let timer: NodeJS.Timeout | undefined;
        await Promise.race([serverClosed, new Promise<void>((resolve) => (timer = setTimeout(resolve, CLOSE_GRACE_MS)))]);
        clearTimeout(timer);
        for (const s of sockets) s.destroy();
        await serverClosed;
        if ('path' in target) await unlink(target.path).catch(() => undefined);
        log.info({ address }, 'local API closed');
      })();
      return closed;
    },
  };
}
