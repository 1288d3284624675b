// `hotstandby status NAME`: the HotStandbyCluster's status from Kubernetes.
import type { CommandIo } from './commands/status.ts';
import { describeKubeError, openKubeCluster, renderHscStatus, type KubeTarget } from './kube-cluster.ts';
import { sleep } from '../lib/time.ts';

export async function runKubeStatus(opts: KubeTarget & { json?: boolean; watch?: boolean }, io: CommandIo): Promise<number> {
  const cluster = openKubeCluster(opts);
  const target = { name: opts.name, namespace: cluster.namespace };
  for (let frame = 0; ; frame++) {
    let text: string;
    let ok = true;
    try {
      const hsc = await cluster.get();
      text = opts.json ? JSON.stringify(opts.watch ? hsc : { metadata: hsc.metadata, spec: hsc.spec, status: hsc.status ?? {} }, null, opts.watch ? 0 : 2) : renderHscStatus(hsc);
    } catch (err) {
      ok = false;
      text = describeKubeError(err, target);
    }
    if (!opts.watch) {
      if (ok) io.out(text);
      else io.err(text);
      return ok ? 0 : 1;
    }
    if (io.signal.aborted) return 0;
    io.out((io.isTty ? '\x1b[H\x1b[2J' : frame > 0 ? '\n' : '') + text);
    await sleep(1000, io.signal).catch(() => undefined);
    if (io.signal.aborted) return 0;
  }
}
