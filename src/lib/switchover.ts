// A planned switchover is asked for by writing the cluster's `switchover` key;
// the leader's agent carries it out (see src/agent/agent.ts). The CLI and the
// operator ask the same way, through these two calls.
import type { Etcd3 } from 'etcd3';
import type { EtcdKeys } from './keys.ts';
import { withTimeout } from './time.ts';

export interface SwitchoverRequestRecord {
  target: string;
  requestedAt: string;
}

const CALL_TIMEOUT_MS = 3000;

/**
 * Writes a request to hand leadership from the leader at `leaderEpoch` to
 * `target`, in one transaction that holds only while that leader still leads,
 * the target is still registered, and (unless `replace`) no other request is
 * pending. Returns the stored JSON, or undefined when the cluster changed.
 * Rejects when etcd does not answer in time.
 */
export async function requestSwitchover(opts: {
  etcd: Etcd3;
  keys: EtcdKeys;
  leaderEpoch: number;
  target: string;
  replace?: boolean;
  now?: Date;
}): Promise<string | undefined> {
  const { etcd, keys } = opts;
  const record: SwitchoverRequestRecord = { target: opts.target, requestedAt: (opts.now ?? new Date()).toISOString() };
  const json = JSON.stringify(record);
  let txn = etcd.if(keys.leader, 'Create', '==', opts.leaderEpoch).and(keys.member(opts.target), 'Version', '>', 0);
  if (!opts.replace) txn = txn.and(keys.switchover, 'Version', '==', 0);
  const res = await withTimeout(txn.then(etcd.put(keys.switchover).value(json)).commit(), CALL_TIMEOUT_MS, 'etcd to store the switchover request');
  return res.succeeded ? json : undefined;
}

/** Deletes the request if it is still the one given, so a late leader does not act on it. True when it was deleted. */
export async function withdrawSwitchover(etcd: Etcd3, keys: EtcdKeys, requestJson: string): Promise<boolean> {
  try {
    const res = await withTimeout(
      etcd.if(keys.switchover, 'Value', '==', requestJson).then(etcd.delete().key(keys.switchover)).commit(),
      CALL_TIMEOUT_MS,
      'etcd to withdraw the switchover request',
    );
    return res.succeeded;
  } catch {
    return false;
  }
}
