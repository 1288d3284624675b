// Maps what went wrong to the status, code and body of docs/local-api.md's
// error table. Kept apart from the server so the mapping is one readable table.
import { FencedError, NotLeaderError } from '../types.ts';
import { BadRequestError, StoreUnavailableError } from './backend.ts';
import { TimeoutError } from '../../lib/time.ts';
import { EtcdError, EtcdUnreachableError } from '../../lib/etcd-http/client.ts';
import { SupersededError } from '../master-session.ts';
import { SyncTimeoutError } from '../sync-replication.ts';

export type ErrorCode =
  | 'bad_request'
  | 'not_found'
  | 'method_not_allowed'
  | 'not_leader'
  | 'fenced'
  | 'conflict'
  | 'superseded'
  | 'too_large'
  | 'unavailable'
  | 'sync_timeout'
  | 'internal';

export interface ErrorBody {
  error: {
    code: ErrorCode;
    message: string;
    field?: string;
    leader?: { member: string; address: string; epoch: number } | null;
    currentModRevision?: number;
    currentEpoch?: number;
  };
}

export interface HttpError {
  status: number;
  body: ErrorBody;
}

export function httpError(status: number, code: ErrorCode, message: string, extra: Omit<ErrorBody['error'], 'code' | 'message'> = {}): HttpError {
  return { status, body: { error: { code, message, ...extra } } };
}

/** The answer for an error thrown by the backend. Unknown errors are 500 `internal`. */
export function mapBackendError(err: unknown): HttpError {
  if (err instanceof NotLeaderError) {
    const l = err.leader;
    return httpError(409, 'not_leader', err.message, { leader: l ? { member: l.member, address: l.address, epoch: l.epoch } : null });
  }
  if (err instanceof FencedError) return httpError(409, 'fenced', err.message, { currentEpoch: err.currentEpoch });
  // A newer process of the master talks to this agent: this one must stop (it is a leftover).
  if (err instanceof SupersededError) return httpError(409, 'superseded', err.message);
  if (err instanceof StoreUnavailableError) return httpError(503, 'unavailable', err.message);
  // Sync replication, strict: the batch is in the log but too few standbys acknowledged it in time.
  if (err instanceof SyncTimeoutError) return httpError(503, 'sync_timeout', err.message);
  // A store call that ran out of time: the store is unreachable or overloaded; retrying is safe.
  if (err instanceof TimeoutError) return httpError(503, 'unavailable', err.message);
  // etcd could not be reached, or answered that it cannot serve now (gRPC UNAVAILABLE: no leader, stopping).
  if (err instanceof EtcdUnreachableError || (err instanceof EtcdError && err.code === 14)) return httpError(503, 'unavailable', err.message);
  if (err instanceof BadRequestError) return httpError(400, 'bad_request', err.message, { field: err.field });
  // The store modules (metadata, deletes) refuse bad input with a RangeError that names the field.
  if (err instanceof RangeError && typeof (err as RangeError & { field?: unknown }).field === 'string') {
    return httpError(400, 'bad_request', err.message, { field: (err as RangeError & { field: string }).field });
  }
  const message = err instanceof Error ? err.message : String(err);
  return httpError(500, 'internal', `internal error: ${message}`);
}
