// A typed client for the agent's local API (docs/local-api.md), as any master
// would write one: plain HTTP/1.1 + JSON over loopback TCP or a Unix socket.
// Every call has a timeout; the log stream is a bounded NDJSON reader.
import type { IncomingHttpHeaders, IncomingMessage, OutgoingHttpHeaders } from 'node:http';
import type { RoleStatus, SnapshotDescriptor } from '../agent/types.ts';
// The wire shape of the log stream, as the agent defines it (type only: nothing of the agent is loaded).
import type { StreamLine } from '../agent/localapi/backend.ts';
import { readLines } from '../lib/lines.ts';

// Not `import http from 'node:http'`: an ES import of a built-in reads every
// export, and node:http's include WebSocket & co., which load undici, http2,
// tls and worker_threads (~12 MB RSS) that nothing here uses (issue 10).
const http = process.getBuiltinModule('node:http');

/** A non-2xx answer from the agent: `code` is the API's error code (not_leader, fenced, unavailable, ...). */
export class AgentApiError extends Error {
  readonly status: number;
  readonly code: string;
  readonly leader: { member: string; address: string; epoch: number } | null;
  readonly field: string | undefined;
  constructor(status: number, code: string, message: string, extra: { leader?: AgentApiError['leader']; field?: string } = {}) {
    super(message);
    this.name = 'AgentApiError';
    this.status = status;
    this.code = code;
    this.leader = extra.leader ?? null;
    this.field = extra.field;
  }
  /** The agent could not be reached or did not answer in time. */
  static unreachable(message: string): AgentApiError {
    return new AgentApiError(0, 'unreachable', message);
  }
}

/** "host:port" or "unix:/path". */
function target(address: string): { socketPath: string } | { host: string; port: number } {
  if (address.startsWith('unix:')) return { socketPath: address.slice('unix:'.length) };
  const i = address.lastIndexOf(':');
  const port = Number(address.slice(i + 1));
  if (i <= 0 || !Number.isInteger(port) || port < 1 || port > 65535) {
    throw new Error(`--agent-api ${address}: expected host:port (e.g. 127.0.0.1:7070) or unix:/path`);
  }
  return { host: address.slice(0, i).replace(/^\[|\]$/g, ''), port };
}

/** The longest log stream line (one entry, as JSON) the master accepts; a longer one ends the stream. */
const MAX_LINE_CHARS = 16 * 1024 * 1024;

export class AgentClient {
  readonly address: string;
  private readonly target: ReturnType<typeof target>;
  private readonly pool = new http.Agent({ keepAlive: true, maxSockets: 16 });
  private readonly timeoutMs: number;
  /** Sent as X-Master-Instance on every request: tells the agent this process from an earlier one. */
  readonly instance: string | undefined;

  /**
   * `instance`: a name new each time the master process starts (the agent
   * then knows a restarted master has to catch up before it may write).
   */
  constructor(address: string, opts: { timeoutMs?: number; instance?: string } = {}) {
    this.address = address;
    this.target = target(address);
    this.timeoutMs = opts.timeoutMs ?? 10_000;
    this.instance = opts.instance;
  }

  private headers(): OutgoingHttpHeaders {
    return this.instance === undefined ? {} : { 'x-master-instance': this.instance };
  }

  role(after?: number, timeoutMs = 30_000): Promise<RoleStatus> {
    const query = after === undefined ? '' : `?after=${after}&timeoutMs=${timeoutMs}`;
    return this.json('GET', `/v1/role${query}`, undefined, timeoutMs + this.timeoutMs) as Promise<RoleStatus>;
  }

  /** The agent's role now (no long-poll), answered within timeoutMs or an error. */
  roleNow(timeoutMs: number): Promise<RoleStatus> {
    return this.json('GET', '/v1/role', undefined, timeoutMs) as Promise<RoleStatus>;
  }

  append(entries: Array<{ op: string; key: string; payload: string }>): Promise<{ epoch: number; firstSeq: number; lastSeq: number }> {
    return this.json('POST', '/v1/log/append', { entries }) as Promise<{ epoch: number; firstSeq: number; lastSeq: number }>;
  }

  async ackApplied(seq: number): Promise<void> {
    await this.json('POST', '/v1/applied', { seq });
  }

  putSnapshot(seq: number, data: Buffer): Promise<SnapshotDescriptor> {
    return this.json('PUT', `/v1/snapshot?seq=${seq}`, data, 60_000) as Promise<SnapshotDescriptor>;
  }

  /** The latest snapshot, or undefined when none exists. */
  async getSnapshot(): Promise<{ seq: number; id: string; data: Buffer } | undefined> {
    const res = await this.request('GET', '/v1/snapshot', undefined, 60_000);
    if (res.status === 404) return undefined;
    if (res.status !== 200) throw errorFrom(res.status, res.body);
    return { seq: Number(res.headers['x-snapshot-seq']), id: String(res.headers['x-snapshot-id']), data: res.body };
  }

  /**
   * Lines of GET /v1/log/stream from `from`, until the stream ends, a resync
   * line (the last one), or the signal aborts (then it returns quietly).
   */
  async *stream(from: number, signal: AbortSignal): AsyncGenerator<StreamLine> {
    const res = await new Promise<IncomingMessage>((resolve, reject) => {
      const req = http.request({ ...this.target, agent: this.pool, method: 'GET', path: `/v1/log/stream?from=${from}`, headers: this.headers(), signal }, resolve);
      // No answer to the request itself in time: the agent is stuck or gone.
      req.setTimeout(this.timeoutMs, () => req.destroy(new Error(`no answer from the agent at ${this.address} in ${this.timeoutMs} ms`)));
      req.on('error', reject);
      req.end();
    }).catch((err: Error) => {
      if (signal.aborted) return undefined;
      throw AgentApiError.unreachable(err.message);
    });
    if (!res) return;
    if (res.statusCode !== 200) {
      const body = await readBody(res);
      throw errorFrom(res.statusCode ?? 0, body);
    }
    // Heartbeats come at least once a second; three silent seconds mean a dead stream.
    res.socket.setTimeout(3000, () => res.destroy(new Error('the log stream went silent')));
    res.setEncoding('utf8');
    try {
      for await (const line of readLines(res, MAX_LINE_CHARS)) {
        if (line.length === 0) continue;
        const parsed = JSON.parse(line) as StreamLine;
        yield parsed;
        if (parsed.type === 'resync') return;
      }
    } catch (err) {
      if (signal.aborted) return;
      throw AgentApiError.unreachable(`log stream broke: ${(err as Error).message}`);
    } finally {
      res.socket?.setTimeout(0);
      res.destroy();
    }
  }

  close(): void {
    this.pool.destroy();
  }

  private async json(method: string, path: string, body?: unknown, timeoutMs = this.timeoutMs): Promise<unknown> {
    const res = await this.request(method, path, body, timeoutMs);
    if (res.status >= 300) throw errorFrom(res.status, res.body);
    return res.body.length ? JSON.parse(res.body.toString('utf8')) : undefined;
  }

  private request(method: string, path: string, body: unknown, timeoutMs: number): Promise<{ status: number; headers: IncomingHttpHeaders; body: Buffer }> {
    const payload = body === undefined ? undefined : Buffer.isBuffer(body) ? body : Buffer.from(JSON.stringify(body));
    const headers: OutgoingHttpHeaders = this.headers();
    if (payload) {
      headers['content-type'] = Buffer.isBuffer(body) ? 'application/octet-stream' : 'application/json';
      headers['content-length'] = payload.length;
    }
    return new Promise((resolve, reject) => {
      const req = http.request({ ...this.target, agent: this.pool, method, path, headers }, (res) => {
        readBody(res).then((data) => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: data }), reject);
      });
      req.setTimeout(timeoutMs, () => req.destroy(new Error(`${method} ${path}: no answer from the agent at ${this.address} in ${timeoutMs} ms`)));
      req.on('error', (err) => reject(AgentApiError.unreachable(err.message)));
      req.end(payload);
    });
  }
}

function readBody(res: IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    res.on('data', (c: Buffer) => chunks.push(c));
    res.on('end', () => resolve(Buffer.concat(chunks)));
    res.on('error', reject);
  });
}

function errorFrom(status: number, body: Buffer): AgentApiError {
  try {
    const { error } = JSON.parse(body.toString('utf8')) as {
      error: { code: string; message: string; field?: string; leader?: AgentApiError['leader'] };
    };
    return new AgentApiError(status, error.code, error.message, {
      ...(error.leader !== undefined ? { leader: error.leader } : {}),
      ...(error.field !== undefined ? { field: error.field } : {}),
    });
  } catch {
    return new AgentApiError(status, 'unknown', `HTTP ${status}: ${body.toString('utf8').slice(0, 200)}`);
  }
}
