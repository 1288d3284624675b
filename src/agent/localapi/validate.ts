// Validation of local API requests: pure functions from what arrived (parsed
// JSON, query parameters, a path segment) to either the typed value or the
// field to fix and why. The HTTP layer calls the backend only with values that
// passed here, so a refused request never changes anything.
import type { OpInput } from '../types.ts';

export type Checked<T> = { ok: true; value: T } | { ok: false; field: string; message: string };

export const APPEND_MAX_ENTRIES = 1000;
export const OP_MAX_LENGTH = 64;
export const ENTRY_KEY_MAX_LENGTH = 1024;
export const DELETE_KEY_MAX_LENGTH = 1024;
export const META_KEY_MAX_LENGTH = 512;
export const ROLE_TIMEOUT_MAX_MS = 60_000;
export const ROLE_TIMEOUT_DEFAULT_MS = 30_000;
const META_KEY_PATTERN = /^[A-Za-z0-9._~/-]+$/;
const DIGITS = /^[0-9]+$/;

function ok<T>(value: T): Checked<T> {
  return { ok: true, value };
}
function bad<T>(field: string, message: string): Checked<T> {
  return { ok: false, field, message };
}

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  if (typeof v === 'string') return `a string of ${v.length} characters`;
  if (typeof v === 'number') return String(v);
  return typeof v;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** A non-negative safe integer in JSON (a number, not a string). */
function jsonInt(v: unknown, field: string, min: number): Checked<number> {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < min) {
    return bad(field, `${field} must be an integer >= ${min}, got ${describe(v)}`);
  }
  return ok(v);
}

/** A query parameter that must be a decimal integer >= min (and <= max when given). */
function queryInt(raw: string, field: string, min: number, max?: number): Checked<number> {
  const range = max === undefined ? `>= ${min}` : `${min}-${max}`;
  const n = DIGITS.test(raw) ? Number(raw) : Number.NaN;
  if (!Number.isSafeInteger(n) || n < min || (max !== undefined && n > max)) {
    return bad(field, `${field} must be an integer ${range}, got ${JSON.stringify(raw.slice(0, 40))}`);
  }
  return ok(n);
}

/** Rejects a JSON object with members other than `allowed`: a typo must not be silently ignored. */
function unknownMember(body: Record<string, unknown>, allowed: readonly string[], prefix = ''): Checked<never> | undefined {
  const extra = Object.keys(body).find((k) => !allowed.includes(k));
  if (extra === undefined) return undefined;
  return bad(`${prefix}${extra}`, `unknown field ${JSON.stringify(extra)}; allowed: ${allowed.join(', ')}`);
}

export function checkAppendBody(body: unknown): Checked<OpInput[]> {
  if (!isObject(body)) return bad('body', `body must be a JSON object {"entries":[...]}, got ${describe(body)}`);
  const extra = unknownMember(body, ['entries']);
  if (extra) return extra;
  const entries = body.entries;
  if (!Array.isArray(entries)) return bad('entries', `entries must be an array of 1-${APPEND_MAX_ENTRIES} entries, got ${describe(entries)}`);
  if (entries.length === 0 || entries.length > APPEND_MAX_ENTRIES) {
    return bad('entries', `entries must hold 1-${APPEND_MAX_ENTRIES} entries, got ${entries.length}`);
  }
  const out: OpInput[] = [];
  for (let i = 0; i < entries.length; i++) {
    const e: unknown = entries[i];
    const at = `entries[${i}]`;
    if (!isObject(e)) return bad(at, `${at} must be an object {op, key, payload}, got ${describe(e)}`);
    const extraField = unknownMember(e, ['op', 'key', 'payload'], `${at}.`);
    if (extraField) return extraField;
    if (typeof e.op !== 'string' || e.op.length < 1 || e.op.length > OP_MAX_LENGTH) {
      return bad(`${at}.op`, `${at}.op must be a string of 1-${OP_MAX_LENGTH} characters, got ${describe(e.op)}`);
    }
    if (typeof e.key !== 'string' || e.key.length > ENTRY_KEY_MAX_LENGTH) {
      return bad(`${at}.key`, `${at}.key must be a string of at most ${ENTRY_KEY_MAX_LENGTH} characters, got ${describe(e.key)}`);
    }
    if (typeof e.payload !== 'string') return bad(`${at}.payload`, `${at}.payload must be a string, got ${describe(e.payload)}`);
    out.push({ op: e.op, key: e.key, payload: e.payload });
  }
  return ok(out);
}

export function checkAppliedBody(body: unknown): Checked<number> {
  if (!isObject(body)) return bad('body', `body must be a JSON object {"seq": N}, got ${describe(body)}`);
  const extra = unknownMember(body, ['seq']);
  if (extra) return extra;
  return jsonInt(body.seq, 'seq', 0);
}

export interface RoleQuery {
  /** Undefined: answer at once. */
  after: number | undefined;
  timeoutMs: number;
}

export function checkRoleQuery(q: URLSearchParams): Checked<RoleQuery> {
  const extra = unknownParam(q, ['after', 'timeoutMs']);
  if (extra) return extra;
  let after: number | undefined;
  const rawAfter = q.get('after');
  if (rawAfter !== null) {
    const c = queryInt(rawAfter, 'after', 0);
    if (!c.ok) return c;
    after = c.value;
  }
  let timeoutMs = ROLE_TIMEOUT_DEFAULT_MS;
  const rawTimeout = q.get('timeoutMs');
  if (rawTimeout !== null) {
    const c = queryInt(rawTimeout, 'timeoutMs', 0, ROLE_TIMEOUT_MAX_MS);
    if (!c.ok) return c;
    timeoutMs = c.value;
  }
  return ok({ after, timeoutMs });
}

export function checkStreamQuery(q: URLSearchParams): Checked<{ from: number }> {
  const extra = unknownParam(q, ['from']);
  if (extra) return extra;
  const raw = q.get('from');
  if (raw === null) return bad('from', 'from is required: the first sequence to deliver, an integer >= 1');
  const c = queryInt(raw, 'from', 1);
  return c.ok ? ok({ from: c.value }) : c;
}

export function checkSnapshotQuery(q: URLSearchParams): Checked<{ seq: number }> {
  const extra = unknownParam(q, ['seq']);
  if (extra) return extra;
  const raw = q.get('seq');
  if (raw === null) return bad('seq', 'seq is required: the last sequence the snapshot includes, an integer >= 0');
  const c = queryInt(raw, 'seq', 0);
  return c.ok ? ok({ seq: c.value }) : c;
}

export function checkDeleteBody(body: unknown): Checked<{ key: string; payload: string }> {
  if (!isObject(body)) return bad('body', `body must be a JSON object {"key": "...", "payload": "..."}, got ${describe(body)}`);
  const extra = unknownMember(body, ['key', 'payload']);
  if (extra) return extra;
  const key = body.key;
  if (typeof key !== 'string' || key.length < 1 || key.length > DELETE_KEY_MAX_LENGTH) {
    return bad('key', `key must be a string of 1-${DELETE_KEY_MAX_LENGTH} characters, got ${describe(key)}`);
  }
  const payload = body.payload ?? '';
  if (typeof payload !== 'string') return bad('payload', `payload must be a string when given, got ${describe(payload)}`);
  return ok({ key, payload });
}

export function checkDeletesQuery(q: URLSearchParams): Checked<{ fromRevision: number | undefined }> {
  const extra = unknownParam(q, ['fromRevision']);
  if (extra) return extra;
  const raw = q.get('fromRevision');
  if (raw === null) return ok({ fromRevision: undefined });
  const c = queryInt(raw, 'fromRevision', 1);
  return c.ok ? ok({ fromRevision: c.value }) : c;
}

/** `raw` is the path segment after /v1/meta/, still percent-encoded. */
export function checkMetaKey(raw: string): Checked<string> {
  let key: string;
  try {
    key = decodeURIComponent(raw);
  } catch {
    return bad('key', 'key is not valid percent-encoding');
  }
  if (key.length < 1 || key.length > META_KEY_MAX_LENGTH) {
    return bad('key', `key must be 1-${META_KEY_MAX_LENGTH} characters of A-Z a-z 0-9 . _ ~ / -, got ${key.length} characters`);
  }
  if (!META_KEY_PATTERN.test(key)) {
    const c = [...key].find((ch) => !META_KEY_PATTERN.test(ch)) ?? '';
    return bad('key', `key may contain only A-Z a-z 0-9 . _ ~ / -, got ${JSON.stringify(c)}`);
  }
  return ok(key);
}

export function checkMetaPutBody(body: unknown): Checked<{ value: string; expectedModRevision: number | undefined }> {
  if (!isObject(body)) return bad('body', `body must be a JSON object {"value": "...", "expectedModRevision"?: N}, got ${describe(body)}`);
  const extra = unknownMember(body, ['value', 'expectedModRevision']);
  if (extra) return extra;
  if (typeof body.value !== 'string') return bad('value', `value must be a string, got ${describe(body.value)}`);
  if (body.expectedModRevision === undefined) return ok({ value: body.value, expectedModRevision: undefined });
  const c = jsonInt(body.expectedModRevision, 'expectedModRevision', 0);
  return c.ok ? ok({ value: body.value, expectedModRevision: c.value }) : c;
}

export function checkMetaDeleteQuery(q: URLSearchParams): Checked<{ expectedModRevision: number | undefined }> {
  const extra = unknownParam(q, ['expectedModRevision']);
  if (extra) return extra;
  const raw = q.get('expectedModRevision');
  if (raw === null) return ok({ expectedModRevision: undefined });
  const c = queryInt(raw, 'expectedModRevision', 0);
  return c.ok ? ok({ expectedModRevision: c.value }) : c;
}

export function checkNoQuery(q: URLSearchParams): Checked<null> {
  return unknownParam(q, []) ?? ok(null);
}

function unknownParam(q: URLSearchParams, allowed: readonly string[]): Checked<never> | undefined {
  for (const name of q.keys()) {
    if (!allowed.includes(name)) {
      return bad(name, `unknown query parameter ${JSON.stringify(name)}; allowed: ${allowed.length ? allowed.join(', ') : 'none'}`);
    }
  }
  for (const name of allowed) {
    if (q.getAll(name).length > 1) return bad(name, `${name} may be given once`);
  }
  return undefined;
}
