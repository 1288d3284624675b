// A small JSON client for the Kubernetes API over client-node's own transport
// (its KubeConfig authentication and undici fetch), for the generic calls the
// controller makes on any kind: list, server-side apply, delete, JSON patch.
//
// Why not KubernetesObjectApi's methods: they push every built-in kind through
// client-node's typed models, which drop fields the models do not know (the
// models lag the API server) and turn timestamps into Dates. Comparing a
// dry-run result with the watch cache (plain JSON as the server sends it) must
// see exactly what the server sees. KubernetesObjectApi is still used for what
// it does well: discovery of a kind's resource name and scope.
import {
  HttpMethod,
  IsomorphicFetchHttpLibrary,
  KubernetesObjectApi,
  RequestContext,
  type KubeConfig,
  type V1APIResource,
} from '@kubernetes/client-node';

export interface KindRef {
  apiVersion: string;
  kind: string;
}

/** An object as the API server sends it, plain JSON. */
export interface KubeObject {
  apiVersion: string;
  kind: string;
  metadata: KubeMeta;
  [field: string]: unknown;
}

export interface KubeMeta {
  name: string;
  namespace?: string;
  uid?: string;
  resourceVersion?: string;
  generation?: number;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  finalizers?: string[];
  deletionTimestamp?: string;
  ownerReferences?: OwnerReference[];
  managedFields?: ManagedFieldsEntry[];
  [field: string]: unknown;
}

export interface OwnerReference {
  apiVersion: string;
  kind: string;
  name: string;
  uid: string;
  controller?: boolean;
  blockOwnerDeletion?: boolean;
}

export interface ManagedFieldsEntry {
  manager?: string;
  operation?: string;
  apiVersion?: string;
  time?: string;
  fieldsType?: string;
  fieldsV1?: unknown;
  subresource?: string;
}

export interface KubeList {
  metadata?: { resourceVersion?: string; continue?: string };
  items: KubeObject[];
}

/** An API error with the server's status code and reason (NotFound, Conflict, ...). */
export class KubeApiError extends Error {
  readonly code: number;
  readonly reason: string;
  constructor(code: number, reason: string, message: string) {
    super(message);
    this.name = 'KubeApiError';
    this.code = code;
    this.reason = reason;
  }
}

export const DEFAULT_CALL_TIMEOUT_MS = 15_000;

export interface RequestOptions {
  query?: Record<string, string | undefined>;
  body?: unknown;
  contentType?: string;
  timeoutMs?: number;
  signal?: AbortSignal;
}

/** Opens KubernetesObjectApi's cached discovery (resource name, namespaced) to us. */
class Discovery extends KubernetesObjectApi {
  find(apiVersion: string, kind: string): Promise<V1APIResource | undefined> {
    return this.resource(apiVersion, kind);
  }
}

export class KubeClient {
  readonly kc: KubeConfig;
  private readonly discovery: Discovery;
  private readonly http = new IsomorphicFetchHttpLibrary();
  private readonly server: string;

  /** Told of every request (verb), for the operator's request counter. */
  private readonly onRequest: ((method: string) => void) | undefined;

  constructor(kc: KubeConfig, opts: { onRequest?: (method: string) => void } = {}) {
    this.kc = kc;
    this.onRequest = opts.onRequest;
    this.discovery = kc.makeApiClient(Discovery);
    const cluster = kc.getCurrentCluster();
    if (!cluster) throw new Error('the kubeconfig has no current cluster: set current-context, or run in a pod with a ServiceAccount');
    this.server = cluster.server.replace(/\/+$/, '');
  }

  /** The collection path of a kind, e.g. /apis/apps/v1/namespaces/ns/statefulsets (namespace omitted: all namespaces). */
  async collectionPath(kind: KindRef, namespace?: string): Promise<string> {
    const resource = await this.discovery.find(kind.apiVersion, kind.kind);
    if (!resource) throw new Error(`the API server does not serve ${kind.kind} in ${kind.apiVersion}`);
    const root = kind.apiVersion.includes('/') ? `/apis/${kind.apiVersion}` : `/api/${kind.apiVersion}`;
    const ns = resource.namespaced && namespace ? `/namespaces/${encodeURIComponent(namespace)}` : '';
    return `${root}${ns}/${resource.name}`;
  }

  async objectPath(obj: { apiVersion: string; kind: string; metadata: { name: string; namespace?: string } }): Promise<string> {
    return `${await this.collectionPath(obj, obj.metadata.namespace)}/${encodeURIComponent(obj.metadata.name)}`;
  }

  /** Lists every object of a kind (pages of 500), each with apiVersion and kind filled in as a watch would send them. */
  async list(kind: KindRef, opts: { namespace?: string; labelSelector?: string; signal?: AbortSignal } = {}): Promise<KubeList> {
    const path = await this.collectionPath(kind, opts.namespace);
    const items: KubeObject[] = [];
    let cont: string | undefined;
    let resourceVersion: string | undefined;
    for (let page = 0; page < 10_000; page++) {
      const list = await this.request<KubeList>('GET', path, {
        query: { labelSelector: opts.labelSelector, limit: '500', continue: cont },
        signal: opts.signal,
      });
      resourceVersion ??= list.metadata?.resourceVersion;
      for (const item of list.items ?? []) items.push({ ...item, apiVersion: kind.apiVersion, kind: kind.kind });
      cont = list.metadata?.continue || undefined;
      if (!cont) break;
    }
    return { metadata: { resourceVersion }, items };
  }

  async request<T>(method: 'GET' | 'POST' | 'PATCH' | 'PUT' | 'DELETE', path: string, opts: RequestOptions = {}): Promise<T> {
    const url = new URL(this.server + path);
    this.onRequest?.(opts.query?.dryRun ? `${method} (dry run)` : method);
    for (const [k, v] of Object.entries(opts.query ?? {})) if (v !== undefined) url.searchParams.set(k, v);
    const ctx = new RequestContext(url.toString(), HttpMethod[method]);
    ctx.setHeaderParam('Accept', 'application/json');
    if (opts.body !== undefined) {
      ctx.setHeaderParam('Content-Type', opts.contentType ?? 'application/json');
      ctx.setBody(JSON.stringify(opts.body));
    }
    const timeout = AbortSignal.timeout(opts.timeoutMs ?? DEFAULT_CALL_TIMEOUT_MS);
    ctx.setSignal(opts.signal ? AbortSignal.any([opts.signal, timeout]) : timeout);
    await this.kc.applySecurityAuthentication(ctx);
    let text: string;
    let status: number;
    try {
      const res = await this.http.send(ctx).toPromise();
      status = res.httpStatusCode;
      text = await res.body.text();
    } catch (err) {
      if (timeout.aborted) throw new Error(`${method} ${path}: no answer within ${opts.timeoutMs ?? DEFAULT_CALL_TIMEOUT_MS} ms`, { cause: err });
      throw err;
    }
    const body = text ? (JSON.parse(text) as unknown) : undefined;
    if (status >= 200 && status < 300) return body as T;
    const s = (body ?? {}) as { reason?: string; message?: string };
    throw new KubeApiError(status, s.reason ?? String(status), `${method} ${path}: ${status} ${s.reason ?? ''} ${s.message ?? text}`.trim());
  }
}

export function isNotFound(err: unknown): boolean {
  return err instanceof KubeApiError && err.code === 404;
}

export function isConflict(err: unknown): boolean {
  return err instanceof KubeApiError && (err.code === 409 || err.code === 422);
}

/** "kind namespace/name" for logs and error messages. */
export function describeObject(obj: { kind: string; metadata: { name: string; namespace?: string } }): string {
  return `${obj.kind} ${obj.metadata.namespace ? `${obj.metadata.namespace}/` : ''}${obj.metadata.name}`;
}
