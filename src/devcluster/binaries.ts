// Where scripts/build-control-plane.sh puts the test control plane's binaries.
// The versions live in one file, tools/controlplane/versions.env, read by both.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { hotstandbyCacheRoot } from '../lib/cacheroot.ts';

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const VERSIONS_FILE = path.join(REPO, 'tools', 'controlplane', 'versions.env');

export interface ControlPlaneBinaries {
  etcd: string;
  kubeApiserver: string;
  kubeControllerManager: string;
  kubeScheduler: string;
  kubectl: string;
  kwok: string;
  helm: string;
}

export function readVersions(file = VERSIONS_FILE): Record<string, string> {
  const versions: Record<string, string> = {};
  for (const line of fs.readFileSync(file, 'utf8').split('\n')) {
    const m = /^([A-Z_]+)=(\S+)$/.exec(line.trim());
    if (m) versions[m[1]!] = m[2]!;
  }
  return versions;
}

export { hotstandbyCacheRoot };

export function cacheDir(): string {
  return path.join(hotstandbyCacheRoot(), 'controlplane');
}

export function binaryPaths(): ControlPlaneBinaries {
  const v = readVersions();
  const at = (module: string, version: string | undefined, binary: string): string => {
    if (!version) throw new Error(`${VERSIONS_FILE} does not name a version for ${module}`);
    return path.join(cacheDir(), `${module}-${version}`, binary);
  };
  return {
    etcd: at('etcd', v.ETCD_VERSION, 'etcd'),
    kubeApiserver: at('kubernetes', v.KUBERNETES_VERSION, 'kube-apiserver'),
    kubeControllerManager: at('kubernetes', v.KUBERNETES_VERSION, 'kube-controller-manager'),
    kubeScheduler: at('kubernetes', v.KUBERNETES_VERSION, 'kube-scheduler'),
    kubectl: at('kubernetes', v.KUBERNETES_VERSION, 'kubectl'),
    kwok: at('kwok', v.KWOK_VERSION, 'kwok'),
    helm: at('helm', v.HELM_VERSION, 'helm'),
  };
}

export class ControlPlaneNotBuiltError extends Error {
  constructor(missing: string[]) {
    super(`the test control plane is not built (missing: ${missing.join(', ')}). Run: bash scripts/build-control-plane.sh`);
    this.name = 'ControlPlaneNotBuiltError';
  }
}

/** The binaries, or ControlPlaneNotBuiltError naming the missing ones and the fix. */
export function requireBinaries(): ControlPlaneBinaries {
  const paths = binaryPaths();
  const missing = Object.values(paths).filter((p) => !fs.existsSync(p));
  if (missing.length > 0) throw new ControlPlaneNotBuiltError(missing);
  return paths;
}

/** The real node's binaries (`dev-cluster up --real-node`), built by the same script. */
export interface NodeBinaries {
  kubelet: string;
  kubeProxy: string;
  coredns: string;
  pause: string;
}

export function nodeBinaryPaths(): NodeBinaries {
  const v = readVersions();
  const at = (module: string, version: string | undefined, binary: string): string => {
    if (!version) throw new Error(`${VERSIONS_FILE} does not name a version for ${module}`);
    return path.join(cacheDir(), `${module}-${version}`, binary);
  };
  return {
    kubelet: at('kubernetes', v.KUBERNETES_VERSION, 'kubelet'),
    kubeProxy: at('kubernetes', v.KUBERNETES_VERSION, 'kube-proxy'),
    coredns: at('coredns', v.COREDNS_VERSION, 'coredns'),
    pause: at('pause', 'v1', 'pause'),
  };
}

/** The real node's binaries, or ControlPlaneNotBuiltError naming the missing ones and the fix. */
export function requireNodeBinaries(): NodeBinaries {
  const paths = nodeBinaryPaths();
  const missing = Object.values(paths).filter((p) => !fs.existsSync(p));
  if (missing.length > 0) throw new ControlPlaneNotBuiltError(missing);
  return paths;
}
