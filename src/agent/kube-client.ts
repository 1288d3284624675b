// The few Kubernetes API calls the agent makes (list pods by label, merge-patch
// a pod's labels), over plain node:https. The agent is a sidecar beside every
// master; @kubernetes/client-node would cost it tens of MB for two calls.
//
// Credentials come from files that Kubernetes rotates (projected service
// account tokens expire and are rewritten in place), so the token and CA are
// re-read every TOKEN_REFRESH_MS and at once after a 401.
import https from 'node:https';

const fs = process.getBuiltinModule('node:fs');

/** Where the API server is and how to authenticate to it. */
export interface KubeAccess {
  /** https://host:port */
  server: string;
  /** A bearer token file (in a pod: the projected service account token). */
  tokenFile: string;
  /** CA bundle that signed the API server's certificate; system roots when absent. */
  caFile?: string;
  /** The namespace of this pod (and of its cluster's pods). */
  namespace: string;
}

export const IN_CLUSTER_TOKEN_FILE = '/var/run/secrets/kubernetes.io/serviceaccount/token';
export const IN_CLUSTER_CA_FILE = '/var/run/secrets/kubernetes.io/serviceaccount/ca.crt';
export const IN_CLUSTER_NAMESPACE_FILE = '/var/run/secrets/kubernetes.io/serviceaccount/namespace';

/** Re-read the token and CA at least this often: kubelet rotates projected tokens well before they expire. */
const TOKEN_REFRESH_MS = 60_000;
const DEFAULT_REQUEST_TIMEOUT_MS = 3000;
/** A list or patch answer is a few KB; anything far bigger is not what we asked for. */
const MAX_RESPONSE_BYTES = 8 * 1024 * 1024;

/** A non-2xx answer from the API server: status, reason (Forbidden, NotFound, Conflict...) and message. */
export class KubeApiError extends Error {
  readonly status: number;
  readonly reason: string;
  constructor(status: number, reason: string, message: string) {
    super(`${status} ${reason}: ${message}`);
    this.name = 'KubeApiError';
    this.status = status;
    this.reason = reason;
  }
}

export interface PodLabels {
  name: string;
  resourceVersion: string;
  labels: Record<string, string>;
}

export class KubeClient {
  readonly access: KubeAccess;
  private readonly requestTimeoutMs: number;
  private token = '';
  private ca: Buffer | undefined;
  private agent: https.Agent | undefined;
  private loadedAt = Number.NEGATIVE_INFINITY;
  private closed = false;

  constructor(access: KubeAccess, opts: { requestTimeoutMs?: number } = {}) {
    this.access = access;
    this.requestTimeoutMs = opts.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS;
  }

  /** Pods in our namespace matching a label selector, with their labels and resourceVersion. */
  async listPods(labelSelector: string, signal?: AbortSignal): Promise<PodLabels[]> {
    const path = `/api/v1/namespaces/${encodeURIComponent(this.access.namespace)}/pods?labelSelector=${encodeURIComponent(labelSelector)}`;
    const body = (await this.request('GET', path, undefined, signal)) as {
      items?: Array<{ metadata?: { name?: string; resourceVersion?: string; labels?: Record<string, string> } }>;
    };
    return (body.items ?? []).map((p) => ({
      name: p.metadata?.name ?? '',
      resourceVersion: p.metadata?.resourceVersion ?? '',
      labels: p.metadata?.labels ?? {},
    }));
  }

  /**
   * JSON merge patch of a pod's labels; a null value removes the label. With
   * `resourceVersion` the patch applies only to that version of the pod (409
   * Conflict otherwise), so a label someone changed meanwhile is not clobbered.
   */
  async patchPodLabels(pod: string, labels: Record<string, string | null>, opts: { resourceVersion?: string; signal?: AbortSignal } = {}): Promise<void> {
    const metadata: Record<string, unknown> = { labels };
    if (opts.resourceVersion) metadata.resourceVersion = opts.resourceVersion;
    const path = `/api/v1/namespaces/${encodeURIComponent(this.access.namespace)}/pods/${encodeURIComponent(pod)}`;
    await this.request('PATCH', path, JSON.stringify({ metadata }), opts.signal);
  }

  /** Releases the keep-alive connections. */
  close(): void {
    this.closed = true;
    this.agent?.destroy();
    this.agent = undefined;
  }

  private async request(method: 'GET' | 'PATCH', path: string, body: string | undefined, signal?: AbortSignal): Promise<unknown> {
    try {
      return await this.requestOnce(method, path, body, signal);
    } catch (err) {
      // A rotated token: read the files again and try once more.
      if (err instanceof KubeApiError && err.status === 401) {
        this.loadedAt = Number.NEGATIVE_INFINITY;
        return this.requestOnce(method, path, body, signal);
      }
      throw err;
    }
  }

  private loadCredentials(): void {
    if (Date.now() - this.loadedAt < TOKEN_REFRESH_MS && this.agent) return;
    let token: string;
    try {
      token = fs.readFileSync(this.access.tokenFile, 'utf8').trim();
    } catch (err) {
      throw new Error(`cannot read the Kubernetes token file ${this.access.tokenFile}: ${(err as Error).message}`, { cause: err });
    }
    let ca: Buffer | undefined;
    if (this.access.caFile) {
      try {
        ca = fs.readFileSync(this.access.caFile);
      } catch (err) {
        throw new Error(`cannot read the Kubernetes CA file ${this.access.caFile}: ${(err as Error).message}`, { cause: err });
      }
    }
    if (!this.agent || !sameBuffer(ca, this.ca)) {
      this.agent?.destroy();
      this.agent = new https.Agent({ keepAlive: true, maxSockets: 4, ...(ca ? { ca } : {}) });
    }
    this.token = token;
    this.ca = ca;
    this.loadedAt = Date.now();
  }

  private requestOnce(method: string, path: string, body: string | undefined, signal?: AbortSignal): Promise<unknown> {
    if (this.closed) return Promise.reject(new Error('the Kubernetes client is closed'));
    this.loadCredentials();
    const url = new URL(path, this.access.server);
    return new Promise((resolve, reject) => {
      // Every request is bounded as a whole (connect, TLS, answer): no answer in time is a failure.
      const timer = setTimeout(
        () => req.destroy(new Error(`${method} ${url.pathname}: no answer from the API server within ${this.requestTimeoutMs} ms`)),
        this.requestTimeoutMs,
      );
      const settle = (fn: () => void): void => {
        clearTimeout(timer);
        fn();
      };
      const req = https.request(
        url,
        {
          method,
          agent: this.agent,
          ...(signal ? { signal } : {}),
          headers: {
            authorization: `Bearer ${this.token}`,
            accept: 'application/json',
            ...(body !== undefined ? { 'content-type': 'application/merge-patch+json', 'content-length': Buffer.byteLength(body) } : {}),
          },
        },
        (res) => {
          const chunks: Buffer[] = [];
          let size = 0;
          res.on('data', (chunk: Buffer) => {
            size += chunk.length;
            if (size > MAX_RESPONSE_BYTES) req.destroy(new Error(`the API server's answer to ${method} ${url.pathname} exceeds ${MAX_RESPONSE_BYTES} bytes`));
            else chunks.push(chunk);
          });
          res.on('end', () => {
            const text = Buffer.concat(chunks).toString('utf8');
            let parsed: unknown;
            try {
              parsed = text ? JSON.parse(text) : {};
            } catch {
              parsed = { message: text.slice(0, 200) };
            }
            const status = res.statusCode ?? 0;
            if (status >= 200 && status < 300) return settle(() => resolve(parsed));
            const s = parsed as { reason?: string; message?: string };
            settle(() => reject(new KubeApiError(status, s.reason ?? res.statusMessage ?? 'Error', s.message ?? `${method} ${url.pathname} failed`)));
          });
          res.on('error', (err) => settle(() => reject(err)));
        },
      );
      req.on('error', (err) => settle(() => reject(err)));
      req.end(body);
    });
  }
}

function sameBuffer(a: Buffer | undefined, b: Buffer | undefined): boolean {
  if (!a || !b) return a === b;
  return a.equals(b);
}
