// `hotstandby switchover NAME --to POD|any`: asks the operator through the
// hotstandby.dev/switchover-to annotation and follows status.switchover.
import type { HotStandbyClusterStatus } from '../api/v1alpha1.ts';
import { SWITCHOVER_ANNOTATION } from '../lib/labels.ts';
import { sleep } from '../lib/time.ts';
import type { CommandIo } from './commands/status.ts';
import { formatAge } from './commands/status.ts';
import { describeKubeError, openKubeCluster, type KubeTarget } from './kube-cluster.ts';

const POLL_MS = 250;

type SwitchoverStatus = NonNullable<HotStandbyClusterStatus['switchover']>;

export async function runKubeSwitchover(opts: KubeTarget & { target: string; timeoutMs: number }, io: CommandIo): Promise<number> {
  const cluster = openKubeCluster(opts);
  const id = { name: opts.name, namespace: cluster.namespace };
  let before: SwitchoverStatus | undefined;
  try {
    const hsc = await cluster.get();
    const pending = (hsc.metadata.annotations as Record<string, string> | undefined)?.[SWITCHOVER_ANNOTATION];
    if (pending) {
      io.err(`a switchover to ${pending} is already asked for and not picked up yet; wait for it (hotstandby status ${opts.name}) and try again`);
      return 1;
    }
    if (hsc.status?.switchover?.result === 'Pending') {
      io.err(`a switchover to ${hsc.status.switchover.target} is in progress; wait for it and try again`);
      return 1;
    }
    if (hsc.status?.leader?.pod === opts.target) {
      io.out(`${opts.target} already leads ${cluster.namespace}/${opts.name}; nothing to do.`);
      return 0;
    }
    before = hsc.status?.switchover;
    await cluster.annotate({ [SWITCHOVER_ANNOTATION]: opts.target });
  } catch (err) {
    io.err(describeKubeError(err, id));
    return 1;
  }
  const started = Date.now();
  io.out(`asked the operator to switch ${cluster.namespace}/${opts.name} over to ${opts.target}; waiting up to ${formatAge(opts.timeoutMs)}`);
  let lastNote = '';
  while (Date.now() - started < opts.timeoutMs && !io.signal.aborted) {
    try {
      const hsc = await cluster.get();
      const s = hsc.status?.switchover;
      // A new outcome is one with a requestedAt we had not seen before the annotation.
      if (s && s.requestedAt !== before?.requestedAt) {
        if (s.result === 'Succeeded') {
          io.out(`switchover complete: ${s.message ?? `${s.target} leads`} (${formatAge(Date.now() - started)} in all)`);
          return 0;
        }
        if (s.result === 'Failed') {
          io.err(`switchover failed: ${s.message ?? 'no reason given'}`);
          return 1;
        }
        if (s.message && s.message !== lastNote) io.out(`  ${formatAge(Date.now() - started).padStart(6)}  ${(lastNote = s.message)}`);
      }
    } catch (err) {
      const note = describeKubeError(err, id);
      if (note !== lastNote) io.out(`  ${formatAge(Date.now() - started).padStart(6)}  ${(lastNote = note)}; retrying`);
    }
    await sleep(POLL_MS, io.signal).catch(() => undefined);
  }
  io.err(
    io.signal.aborted
      ? 'interrupted; the operator carries on with the request'
      : `no outcome after ${formatAge(opts.timeoutMs)}; the operator withdraws a request that has not completed after 30 s. See hotstandby status ${opts.name} -n ${cluster.namespace}`,
  );
  return io.signal.aborted ? 130 : 1;
}
