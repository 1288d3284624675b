// Test harness for e2e tests: a real Kubernetes control plane (src/devcluster)
// per test file, stopped after the file's tests even when they fail.
//
// E2E tests run when HOTSTANDBY_E2E=1 (scripts/test.sh sets it after building
// the control plane) or when the binaries are already built. With
// HOTSTANDBY_E2E=1 and the binaries missing they fail, never skip.
import fs from 'node:fs';
import { afterAll, beforeAll, describe } from 'vitest';
import { binaryPaths } from '../../src/devcluster/binaries.ts';
import { startDevCluster, type DevCluster } from '../../src/devcluster/cluster.ts';

function binariesBuilt(): boolean {
  return Object.values(binaryPaths()).every((p) => fs.existsSync(p));
}

export const e2eEnabled = process.env.HOTSTANDBY_E2E === '1' || binariesBuilt();

/** `describe` when e2e tests run here, else `describe.skip` with a note saying how to run them. */
export const describeE2E = describe.skipIf(!e2eEnabled);
if (!e2eEnabled) {
  process.stderr.write('e2e tests skipped: the test control plane is not built. Run bash scripts/build-control-plane.sh, or HOTSTANDBY_E2E=1.\n');
}

/** Starts a dev cluster before the file's tests and stops it after. */
export function useDevCluster(opts: { nodes?: number } = {}): () => DevCluster {
  let cluster: DevCluster | undefined;
  beforeAll(async () => {
    cluster = await startDevCluster(opts);
  }, 180_000);
  afterAll(async () => {
    await cluster?.stop();
  }, 60_000);
  return () => {
    if (!cluster) throw new Error('the dev cluster is not started yet: use it inside a test or beforeAll');
    return cluster;
  };
}
