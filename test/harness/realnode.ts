// Whether the real-node e2e tests can run here, decided once the same way for
// every file that uses the real node.
import fs from 'node:fs';
import { binaryPaths, nodeBinaryPaths } from '../../src/devcluster/binaries.ts';
import { realNodeUnavailable } from '../../src/devcluster/realnode.ts';

export interface RealNodeAvailability {
  /** Why the real node cannot run here; undefined when it can. */
  unavailable: string | undefined;
  /** Skip the suite: unavailable, and not under the README's test command as root (there a missing piece is a failure). */
  skip: boolean;
}

/** `what` names the suite in the line printed when it is skipped. */
export function realNodeAvailability(what: string): RealNodeAvailability {
  const unavailable =
    realNodeUnavailable() ??
    ([...Object.values(binaryPaths()), ...Object.values(nodeBinaryPaths())].some((p) => !fs.existsSync(p))
      ? 'the control plane or the real node binaries are not built (bash scripts/build-control-plane.sh)'
      : undefined);
  const mustRun = process.env.HOTSTANDBY_E2E === '1' && process.getuid?.() === 0;
  if (unavailable && !mustRun) process.stderr.write(`${what} skipped: ${unavailable}\n`);
  return { unavailable, skip: unavailable !== undefined && !mustRun };
}
