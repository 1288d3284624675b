// An etcd v3 client over etcd's JSON gateway (`POST /v3/...` on the client
// port, on by default since etcd 3.3) and Node's own http module.
//
// Why not etcd3 (gRPC): the agent runs beside every master, so what it loads
// is paid once per pod. etcd3 brings @grpc/grpc-js, protobufjs with etcd's
// .proto files parsed at start, and Node's http2 and TLS code: ~15 MB RSS and
// most of an agent's start-up time, for the dozen calls the agent makes
// (issue 10, docs/footprint.md). The gateway serves the same RPCs with the
// same semantics; this client covers the ones the agent uses: range, put,
// delete, txn, lease grant / keepalive / revoke, and watch (watch.ts).
//
// Every call has a deadline (the request is destroyed when it passes). With
// several endpoints, a call that could not even connect tries the next one
// within its deadline; any other failure moves the next call to the next
// endpoint and is reported to the caller, who owns the retry (a request that
// may have reached etcd is never sent twice here).
import type { Agent as HttpAgent, ClientRequest, IncomingMessage, RequestOptions } from 'node:http';
import { LineSplitter } from '../lines.ts';
import { TimeoutError } from '../time.ts';
import {
  decodeDelete,
  decodeHeader,
  decodeRange,
  decodePut,
  decodeTxn,
  encodeDelete,
  encodePut,
  encodeRange,
  encodeTxn,
  type DeleteRangeResponse,
  type DeleteRequest,
  type LeaseGrantResponse,
  type LeaseKeepAliveResponse,
  type PutRequest,
  type PutResponse,
  type RangeRequest,
  type RangeResponse,
  type TxnRequest,
  type TxnResponse,
  type WatchRequest,
} from './types.ts';
import { EtcdWatch } from './watch.ts';

// process.getBuiltinModule, not an ES import: importing node:http as a
// namespace reads every export, and its WebSocket getters load undici
// (docs/footprint.md).
const http = process.getBuiltinModule('node:http');

export interface EtcdTlsFiles {
  /** CA of etcd's serving certificate; the system roots when absent. */
  ca?: Buffer;
  /** Client certificate and key, for etcd's --client-cert-auth. */
  cert?: Buffer;
  key?: Buffer;
}

export interface EtcdHttpOptions {
  /** http://host:port or https://host:port, one per etcd member. */
  endpoints: string[];
  tls?: EtcdTlsFiles;
  /** Deadline of a call that names none. Default 5000. */
  callTimeoutMs?: number;
}

/** etcd answered, with an error (its gRPC status code and message). */
export class EtcdError extends Error {
  readonly code: number;
  constructor(message: string, code: number) {
    super(message);
    this.name = 'EtcdError';
    this.code = code;
  }
}

/** The lease named in the request does not exist (expired or revoked). */
export class EtcdLeaseNotFoundError extends EtcdError {
  constructor(message: string, code: number) {
    super(message, code);
    this.name = 'EtcdLeaseNotFoundError';
  }
}

/** The requested revision has been compacted away. */
export class EtcdCompactedError extends EtcdError {
  constructor(message: string, code: number) {
    super(message, code);
    this.name = 'EtcdCompactedError';
  }
}

/** No answer from etcd: the connection failed or broke. */
export class EtcdUnreachableError extends Error {
  /** The request never left: trying another endpoint cannot apply it twice. */
  readonly notSent: boolean;
  constructor(endpoint: string, cause: Error) {
    const code = (cause as NodeJS.ErrnoException).code;
    super(`etcd at ${endpoint}: ${cause.message}`, { cause });
    this.name = 'EtcdUnreachableError';
    this.notSent = code !== undefined && NOT_SENT_CODES.has(code);
  }
}

/** Connection errors that mean the request was never sent. */
const NOT_SENT_CODES = new Set(['ECONNREFUSED', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN', 'EADDRNOTAVAIL']);
/** gRPC UNAVAILABLE: this member cannot serve now (no leader, stopping); another may. */
const GRPC_UNAVAILABLE = 14;

function etcdErrorFrom(status: number, body: unknown): EtcdError {
  const b = (body ?? {}) as { error?: unknown; message?: unknown; code?: unknown };
  const message = typeof b.message === 'string' ? b.message : typeof b.error === 'string' ? b.error : `HTTP ${status}`;
  const code = typeof b.code === 'number' ? b.code : 2;
  if (/requested lease not found/.test(message)) return new EtcdLeaseNotFoundError(message, code);
  if (/required revision has been compacted/.test(message)) return new EtcdCompactedError(message, code);
  return new EtcdError(message, code);
}

interface Endpoint {
  url: string;
  secure: boolean;
  host: string;
  port: number;
}

function parseEndpoint(url: string): Endpoint {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new Error(`etcd endpoint must look like http://host:port, got ${JSON.stringify(url)}`);
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') throw new Error(`etcd endpoint must be http:// or https://, got ${JSON.stringify(url)}`);
  const secure = parsed.protocol === 'https:';
  const host = parsed.hostname.replace(/^\[(.*)\]$/, '$1');
  return { url, secure, host, port: Number(parsed.port || (secure ? 443 : 80)) };
}

/** One parsed JSON value per line of a gateway stream. */
export type StreamHandlers = {
  onMessage(message: Record<string, unknown>): void;
  /** The stream ended or broke (err set), or could not be opened. Called once; not after abort() or the client's close(). */
  onClose(err: Error | undefined): void;
  /** The client was closed: the stream is ended silently (or was never opened, when it was already closed). */
  onClientClosed?(): void;
};

export class EtcdHttpClient {
  private readonly parsed: Endpoint[];
  private readonly tls: EtcdTlsFiles | undefined;
  private readonly callTimeoutMs: number;
  private preferred = 0;
  private agents: { http?: HttpAgent; https?: HttpAgent } = {};
  /** Open streams, each with its silent end for close(). */
  private readonly streams = new Map<ClientRequest, () => void>();
  private closed = false;

  constructor(opts: EtcdHttpOptions) {
    if (opts.endpoints.length === 0) throw new Error('etcd: at least one endpoint is needed');
    this.parsed = opts.endpoints.map(parseEndpoint);
    if (opts.tls && Boolean(opts.tls.cert) !== Boolean(opts.tls.key)) throw new Error('etcd TLS: a client certificate needs its key, and a key its certificate');
    this.tls = opts.tls;
    this.callTimeoutMs = opts.callTimeoutMs ?? 5000;
  }

  // ---------------------------------------------------------- key-value

  async range(req: RangeRequest, timeoutMs = this.callTimeoutMs): Promise<RangeResponse> {
    return decodeRange(await this.call('/v3/kv/range', encodeRange(req), timeoutMs, 'etcd range'));
  }

  /** The value of one key as UTF-8, or undefined when the key is absent. */
  async getString(key: string, timeoutMs = this.callTimeoutMs): Promise<string | undefined> {
    return (await this.range({ key }, timeoutMs)).kvs[0]?.value.toString('utf8');
  }

  async put(req: PutRequest, timeoutMs = this.callTimeoutMs): Promise<PutResponse> {
    return decodePut(await this.call('/v3/kv/put', encodePut(req), timeoutMs, 'etcd put'));
  }

  async delete(req: DeleteRequest, timeoutMs = this.callTimeoutMs): Promise<DeleteRangeResponse> {
    return decodeDelete(await this.call('/v3/kv/deleterange', encodeDelete(req), timeoutMs, 'etcd delete'));
  }

  async txn(req: TxnRequest, timeoutMs = this.callTimeoutMs): Promise<TxnResponse> {
    return decodeTxn(await this.call('/v3/kv/txn', encodeTxn(req), timeoutMs, 'etcd transaction'));
  }

  // ---------------------------------------------------------- leases

  async leaseGrant(ttlSeconds: number, timeoutMs = this.callTimeoutMs): Promise<LeaseGrantResponse> {
    const raw = await this.call('/v3/lease/grant', { TTL: String(ttlSeconds) }, timeoutMs, 'etcd lease grant');
    if (typeof raw.error === 'string' && raw.error) throw new EtcdError(`etcd refused the lease: ${raw.error}`, 2);
    return { header: decodeHeader(raw.header), ID: String(raw.ID ?? '0'), TTL: String(raw.TTL ?? '0') };
  }

  /** Revokes a lease; its keys vanish at once. Throws EtcdLeaseNotFoundError for an unknown lease. */
  async leaseRevoke(id: string, timeoutMs = this.callTimeoutMs): Promise<void> {
    await this.call('/v3/lease/revoke', { ID: id }, timeoutMs, 'etcd lease revoke');
  }

  /**
   * One keepalive round: one request, one answer. TTL "0" in the answer
   * means the lease no longer exists. Each round is its own HTTP request on
   * a kept-alive connection, so an answer always belongs to the request it
   * answers (no stream whose late answer could be taken for a newer one's).
   */
  async leaseKeepAlive(id: string, timeoutMs = this.callTimeoutMs): Promise<LeaseKeepAliveResponse> {
    // A streaming RPC: the gateway wraps each answer as {"result": ...} or {"error": ...}.
    const raw = await this.call('/v3/lease/keepalive', { ID: id }, timeoutMs, 'etcd keepalive answer');
    if (raw.error) throw etcdErrorFrom(200, raw.error);
    const result = (raw.result ?? {}) as Record<string, unknown>;
    return { ID: String(result.ID ?? id), TTL: String(result.TTL ?? '0') };
  }

  // ---------------------------------------------------------- watch

  /**
   * Opens a watch (see EtcdWatch for its events). It does not reconnect: on
   * 'disconnected' or 'canceled' it is over and the owner opens a new one from
   * the revision it has reached.
   */
  watch(req: WatchRequest, opts: { connectTimeoutMs?: number } = {}): EtcdWatch {
    if (this.closed) throw new Error('etcd client is closed');
    return new EtcdWatch(this, req, opts.connectTimeoutMs ?? this.callTimeoutMs);
  }

  /**
   * Opens a gateway stream on its own connection (a watch holds it for its
   * whole life and must not take one from the pool). Returns abort(), which
   * ends it silently.
   */
  openStream(path: string, body: unknown, handlers: StreamHandlers): () => void {
    if (this.closed) {
      // A watch made just before close() opens its stream on the next tick: it must not open one now.
      handlers.onClientClosed?.();
      return () => undefined;
    }
    const endpoint = this.parsed[this.preferred]!;
    let done = false;
    const close = (err: Error | undefined): void => {
      if (done) return;
      done = true;
      this.streams.delete(req);
      handlers.onClose(err);
    };
    const payload = JSON.stringify(body);
    const req = this.transport(endpoint).request(this.requestOptions(endpoint, path, payload, false), (res) => {
      if (res.statusCode !== 200) {
        readBody(res).then(
          (text) => close(etcdErrorFrom(res.statusCode ?? 0, safeParse(text))),
          (err: Error) => close(err),
        );
        return;
      }
      // No bound on a line: one watch response may carry many large events (a transaction, a catch-up batch).
      const lines = new LineSplitter(Infinity);
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => {
        for (const raw of lines.push(chunk)) {
          if (done) return;
          const line = raw.trim();
          if (!line) continue;
          const message = safeParse(line);
          if (message === undefined) {
            req.destroy();
            return close(new Error(`etcd sent a line that is not JSON: ${line.slice(0, 200)}`));
          }
          handlers.onMessage(message as Record<string, unknown>);
        }
      });
      res.on('end', () => close(new Error('etcd ended the stream')));
      res.on('error', (err) => close(err));
    });
    req.on('error', (err) => {
      this.avoid(endpoint);
      close(new EtcdUnreachableError(endpoint.url, err));
    });
    const abort = (): void => {
      done = true;
      this.streams.delete(req);
      req.destroy();
    };
    this.streams.set(req, () => {
      abort();
      handlers.onClientClosed?.();
    });
    req.end(payload);
    return abort;
  }

  /** Ends every stream (silently: a watch reports nothing) and idle connection. Calls in flight fail. */
  close(): void {
    this.closed = true;
    // Each end marks its stream done before destroying it, so the destroy's error reaches no handler.
    for (const end of [...this.streams.values()]) end();
    this.streams.clear();
    this.agents.http?.destroy();
    this.agents.https?.destroy();
  }

  // ---------------------------------------------------------- transport

  /** A call to the preferred endpoint, to the next ones only when it could not connect at all. */
  private async call(path: string, body: unknown, timeoutMs: number, what: string): Promise<Record<string, unknown>> {
    if (this.closed) throw new Error('etcd client is closed');
    const giveUpAt = performance.now() + timeoutMs;
    let lastError: Error | undefined;
    const first = this.preferred; // avoid() moves this.preferred inside the loop
    for (let tried = 0; tried < this.parsed.length; tried++) {
      const endpoint = this.parsed[(first + tried) % this.parsed.length]!;
      const leftMs = Math.floor(giveUpAt - performance.now());
      if (leftMs <= 0) break;
      try {
        return await this.once(endpoint, path, body, leftMs, what);
      } catch (err) {
        lastError = err as Error;
        if (err instanceof EtcdError && err.code !== GRPC_UNAVAILABLE) throw err; // etcd answered: no reason to move
        this.avoid(endpoint);
        if (!(err instanceof EtcdUnreachableError && err.notSent)) throw err;
      }
    }
    throw lastError ?? new TimeoutError(what, timeoutMs);
  }

  /** The next call goes to the endpoint after this one (with one endpoint, nothing changes). */
  private avoid(endpoint: Endpoint): void {
    const i = this.parsed.indexOf(endpoint);
    if (i === this.preferred) this.preferred = (i + 1) % this.parsed.length;
  }

  private once(endpoint: Endpoint, path: string, body: unknown, timeoutMs: number, what: string): Promise<Record<string, unknown>> {
    return new Promise((resolve, reject) => {
      let settled = false;
      const settle = (err: Error | undefined, value?: Record<string, unknown>): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        if (err) reject(err);
        else resolve(value!);
      };
      const payload = JSON.stringify(body);
      const req = this.transport(endpoint).request(this.requestOptions(endpoint, path, payload, true), (res) => {
        readBody(res).then(
          (text) => {
            const parsed = safeParse(text.split('\n', 1)[0] ?? '');
            if (res.statusCode !== 200) return settle(etcdErrorFrom(res.statusCode ?? 0, parsed));
            if (parsed === undefined || typeof parsed !== 'object') return settle(new Error(`etcd answered ${path} with something that is not JSON: ${text.slice(0, 200)}`));
            settle(undefined, parsed as Record<string, unknown>);
          },
          (err: Error) => settle(new EtcdUnreachableError(endpoint.url, err)),
        );
      });
      // Destroying the request closes its connection too: a late answer can never arrive on a reused one.
      const timer = setTimeout(() => {
        settle(new TimeoutError(`${what} from ${endpoint.url}`, timeoutMs));
        req.destroy();
      }, timeoutMs);
      req.on('error', (err) => settle(new EtcdUnreachableError(endpoint.url, err)));
      req.end(payload);
    });
  }

  private transport(endpoint: Endpoint): { request(opts: RequestOptions, cb: (res: IncomingMessage) => void): ClientRequest } {
    // https only when an endpoint asks for it: loading TLS costs ~5 MB.
    return endpoint.secure ? process.getBuiltinModule('node:https') : http;
  }

  private requestOptions(endpoint: Endpoint, path: string, payload: string, pooled: boolean): RequestOptions {
    const tlsOptions = endpoint.secure && this.tls ? { ...(this.tls.ca ? { ca: this.tls.ca } : {}), ...(this.tls.cert ? { cert: this.tls.cert, key: this.tls.key } : {}) } : {};
    return {
      host: endpoint.host,
      port: endpoint.port,
      path,
      method: 'POST',
      headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) },
      agent: pooled ? this.pool(endpoint) : false,
      ...(pooled ? {} : tlsOptions),
    };
  }

  /** Kept-alive connections for unary calls: a keepalive round is one request on an open connection. */
  private pool(endpoint: Endpoint): HttpAgent {
    if (endpoint.secure) {
      const https = process.getBuiltinModule('node:https');
      this.agents.https ??= new https.Agent({ keepAlive: true, maxFreeSockets: 4, ...(this.tls ?? {}) });
      return this.agents.https;
    }
    this.agents.http ??= new http.Agent({ keepAlive: true, maxFreeSockets: 4 });
    return this.agents.http;
  }
}

function readBody(res: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    res.on('data', (c: Buffer) => chunks.push(c));
    res.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    res.on('error', reject);
  });
}

function safeParse(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return undefined;
  }
}
