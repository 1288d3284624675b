// A real Kubernetes control plane without containers: etcd, kube-apiserver
// (RBAC + Node authorization, service-account tokens), kube-controller-manager,
// kube-scheduler and kwok (fake nodes whose pods become Running), all local
// processes on free loopback ports. Tests start one per file; `hotstandby
// dev-cluster up` runs one in the background for users.
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { ManagedProcess } from '../lib/childproc.ts';
import { startEtcd, type LocalEtcd } from '../lib/localstores.ts';
import { freePort } from '../lib/ports.ts';
import { waitFor } from '../lib/time.ts';
import { requireBinaries, requireNodeBinaries, type ControlPlaneBinaries } from './binaries.ts';
import { makePki } from './pki.ts';
import { KWOK_STAGES } from './kwok-stages.ts';
import { Made } from './made.ts';
import { mountsUnder } from './cleanup.ts';
import { NODE_NETWORK, SERVICE_CIDR, cleanupNode, kubeletClientCert, prepareNodeNetwork, startRealNode, type RealNode } from './realnode.ts';

const run = promisify(execFile);

export const FAKE_NODE_ANNOTATION = 'kwok.x-k8s.io/node';
/** The file in the work directory that records what the real node made (made.ts). */
export const REAL_NODE_RECORD = 'realnode-made.json';
const READY_TIMEOUT_MS = 120_000;

export interface DevClusterOptions {
  workDir?: string;
  /** Fake nodes kwok manages (default 2; 0 with realNode). */
  nodes?: number;
  /**
   * Also run a real node (realnode.ts): containerd, runc, a kubelet, kube-proxy
   * and CoreDNS, so pods really run. Needs root; one per machine. The API server
   * then listens on the pods' bridge gateway instead of 127.0.0.1, so pods reach it.
   */
  realNode?: boolean;
  /** Called with a line per step, for progress. */
  progress?: (line: string) => void;
}

export interface DevCluster {
  readonly workDir: string;
  readonly kubeconfig: string;
  /** https://127.0.0.1:PORT */
  readonly server: string;
  readonly binaries: ControlPlaneBinaries;
  readonly processes: ManagedProcess[];
  /** The real node, when started with realNode. */
  readonly node?: RealNode;
  /** Runs the built kubectl against this cluster; rejects with stderr on a non-zero exit. */
  kubectl(args: string[], opts?: { input?: string; timeoutMs?: number }): Promise<string>;
  /** Stops every process (bounded) and removes the work directory. */
  stop(): Promise<void>;
}

export async function startDevCluster(opts: DevClusterOptions = {}): Promise<DevCluster> {
  const binaries = requireBinaries();
  const nodeBinaries = opts.realNode ? requireNodeBinaries() : undefined;
  const progress = opts.progress ?? (() => undefined);
  const workDir = opts.workDir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'hs-kube-'));
  fs.mkdirSync(workDir, { recursive: true });
  const processes: ManagedProcess[] = [];
  let etcd: LocalEtcd | undefined;
  const made = opts.realNode ? new Made(path.join(workDir, REAL_NODE_RECORD)) : undefined;
  const host = opts.realNode ? NODE_NETWORK.gateway : '127.0.0.1';
  const stop = async (): Promise<void> => {
    // The node first, in its own order (kubelet, containers, containerd, then the machine's state).
    let nodeError: unknown;
    if (made) await cleanupNode(made, progress).catch((err: unknown) => (nodeError = err));
    await Promise.allSettled(processes.reverse().map((p) => p.stop(5000)));
    await etcd?.stop();
    if (nodeError) throw nodeError;
    const mounted = mountsUnder([workDir]);
    if (mounted.length > 0) throw new Error(`not removing ${workDir}: still mounted there: ${mounted.join(', ')}`);
    fs.rmSync(workDir, { recursive: true, force: true });
  };
  try {
    if (made) await prepareNodeNetwork(made, progress);
    progress('etcd');
    etcd = await startEtcd({ workDir, binary: binaries.etcd, name: 'kube-etcd' });
    const pki = makePki(path.join(workDir, 'pki'), opts.realNode ? [host] : []);
    const kubeletClient = opts.realNode ? kubeletClientCert(pki, workDir) : undefined;
    const token = randomBytes(24).toString('hex');
    const tokenFile = path.join(workDir, 'pki', 'tokens.csv');
    fs.writeFileSync(tokenFile, `${token},admin,admin,"system:masters"\n`, { mode: 0o600 });
    const apiPort = await freePort();
    const server = `https://${host}:${apiPort}`;
    const kubeconfig = path.join(workDir, 'kubeconfig');
    fs.writeFileSync(kubeconfig, kubeconfigYaml(server, fs.readFileSync(pki.caCert), token), { mode: 0o600 });
    const spawn = (name: string, command: string, args: string[]): ManagedProcess => {
      const p = new ManagedProcess({ name, command, args, logFile: path.join(workDir, `${name}.log`) });
      processes.push(p);
      return p;
    };

    progress('kube-apiserver');
    const apiserver = spawn('kube-apiserver', binaries.kubeApiserver, [
      `--etcd-servers=${etcd.endpoint}`,
      `--bind-address=${host}`,
      `--advertise-address=${host}`,
      `--secure-port=${apiPort}`,
      `--tls-cert-file=${pki.servingCert}`,
      `--tls-private-key-file=${pki.servingKey}`,
      `--client-ca-file=${pki.caCert}`,
      `--token-auth-file=${tokenFile}`,
      '--authorization-mode=Node,RBAC',
      '--service-account-issuer=https://kubernetes.default.svc.cluster.local',
      `--service-account-key-file=${pki.serviceAccountPub}`,
      `--service-account-signing-key-file=${pki.serviceAccountKey}`,
      `--service-cluster-ip-range=${SERVICE_CIDR}`,
      '--allow-privileged=true',
      '--profiling=false',
      ...(kubeletClient
        ? // Pods reach the API server through the kubernetes Service (its endpoint is the bridge gateway);
          // logs and exec reach the kubelet with a client certificate it trusts.
          [`--kubelet-client-certificate=${kubeletClient.cert}`, `--kubelet-client-key=${kubeletClient.key}`, '--kubelet-preferred-address-types=InternalIP']
        : // The endpoint reconciler refuses a loopback address; nothing in-cluster dials the apiserver's Service here.
          ['--endpoint-reconciler-type=none']),
      `--cert-dir=${path.join(workDir, 'pki')}`,
    ]);
    const kubectl = async (args: string[], o: { input?: string; timeoutMs?: number } = {}): Promise<string> => {
      const child = run(binaries.kubectl, ['--kubeconfig', kubeconfig, ...args], { timeout: o.timeoutMs ?? 60_000, maxBuffer: 64 * 1024 * 1024 });
      if (o.input !== undefined) {
        child.child.stdin?.end(o.input);
      }
      try {
        return (await child).stdout;
      } catch (err) {
        const e = err as { stderr?: string; message: string };
        throw new Error(`kubectl ${args.join(' ')} failed: ${(e.stderr || e.message).trim()}`, { cause: err });
      }
    };
    await untilOneExits(
      processes,
      waitFor(async () => (await kubectl(['get', '--raw', '/readyz'], { timeoutMs: 5000 })).trim() === 'ok', {
        timeoutMs: READY_TIMEOUT_MS,
        intervalMs: 500,
        what: `kube-apiserver /readyz (log: ${apiserver.logFile})`,
      }),
    );

    progress(opts.realNode ? 'kube-controller-manager, kube-scheduler' : 'kube-controller-manager, kube-scheduler, kwok');
    const kcm = spawn('kube-controller-manager', binaries.kubeControllerManager, [
      `--kubeconfig=${kubeconfig}`,
      `--authentication-kubeconfig=${kubeconfig}`,
      `--authorization-kubeconfig=${kubeconfig}`,
      '--bind-address=127.0.0.1',
      `--secure-port=${await freePort()}`,
      `--service-account-private-key-file=${pki.serviceAccountKey}`,
      `--root-ca-file=${pki.caCert}`,
      `--service-cluster-ip-range=${SERVICE_CIDR}`,
      '--leader-elect=false',
      '--use-service-account-credentials=false',
      '--controllers=*,-nodeipam',
    ]);
    spawn('kube-scheduler', binaries.kubeScheduler, [
      `--kubeconfig=${kubeconfig}`,
      `--authentication-kubeconfig=${kubeconfig}`,
      `--authorization-kubeconfig=${kubeconfig}`,
      '--bind-address=127.0.0.1',
      `--secure-port=${await freePort()}`,
      '--leader-elect=false',
    ]);
    const nodes = opts.nodes ?? (opts.realNode ? 0 : 2);
    const stagesFile = path.join(workDir, 'kwok-stages.yaml');
    fs.writeFileSync(stagesFile, KWOK_STAGES);
    if (nodes > 0) spawn('kwok', binaries.kwok, [
      `--kubeconfig=${kubeconfig}`,
      `--config=${stagesFile}`,
      '--node-lease-duration-seconds=40',
      '--manage-all-nodes=false',
      `--manage-nodes-with-annotation-selector=${FAKE_NODE_ANNOTATION}=fake`,
      `--server-address=127.0.0.1:${await freePort()}`,
      '--cidr=10.244.0.0/16',
      '--node-ip=127.0.0.1',
    ]);
    if (nodes > 0) await kubectl(['apply', '-f', '-'], { input: Array.from({ length: nodes }, (_, i) => fakeNodeYaml(`kwok-node-${i}`)).join('---\n') });

    progress('waiting for nodes Ready and the default service account');
    await untilOneExits(processes, waitFor(
      async () => {
        const ready = await kubectl(['get', 'nodes', '-o', 'jsonpath={.items[*].status.conditions[?(@.type=="Ready")].status}']);
        const sa = await kubectl(['get', 'serviceaccount', 'default', '-n', 'default', '-o', 'name']).catch(() => '');
        return ready.split(' ').filter((s) => s === 'True').length === nodes && sa.trim() !== '';
      },
      { timeoutMs: READY_TIMEOUT_MS, intervalMs: 500, what: `${nodes} kwok nodes Ready and the default ServiceAccount (kube-controller-manager log: ${kcm.logFile})` },
    ));
    let node: RealNode | undefined;
    if (made && nodeBinaries) {
      node = await startRealNode({
        workDir,
        made,
        binaries: nodeBinaries,
        pki,
        server,
        kubeconfig,
        kubectl: (args) => kubectl(args, { timeoutMs: 10_000 }),
        progress,
        spawn: (name, command, args) => spawn(name, command, args),
        untilOneExits: (work) => untilOneExits(processes, work),
      });
    }
    progress(`ready: ${server}`);
    return { workDir, kubeconfig, server, binaries, processes, ...(node ? { node } : {}), kubectl, stop };
  } catch (err) {
    // What cannot be undone stays recorded (realnode-made.json) for `dev-cluster down`; the start's error is the one to see.
    await stop().catch((stopErr: unknown) => progress(`cleaning up after the failed start: ${(stopErr as Error).message}`));
    throw err;
  }
}

/** `work`, unless one of the processes exits first: then its log tail says why. */
async function untilOneExits<T>(processes: ManagedProcess[], work: Promise<T>): Promise<T> {
  const onExit = Promise.race(
    processes.map((p) =>
      p.exited.then((status): never => {
        throw new Error(`${p.name} exited (${status.signal ?? `code ${status.code}`}); its log (${p.logFile}) ends with:\n${p.tail(15)}`);
      }),
    ),
  );
  onExit.catch(() => undefined); // observed by the race; not unhandled when `work` wins
  return Promise.race([work, onExit]);
}

function kubeconfigYaml(server: string, caPem: Buffer, token: string): string {
  return `apiVersion: v1
kind: Config
clusters:
- name: dev
  cluster:
    server: ${server}
    certificate-authority-data: ${caPem.toString('base64')}
users:
- name: admin
  user:
    token: ${token}
contexts:
- name: dev
  context:
    cluster: dev
    user: admin
    namespace: default
current-context: dev
`;
}

function fakeNodeYaml(name: string): string {
  return `apiVersion: v1
kind: Node
metadata:
  name: ${name}
  annotations:
    ${FAKE_NODE_ANNOTATION}: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    kubernetes.io/hostname: ${name}
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    type: kwok
status:
  allocatable: {cpu: "32", memory: 256Gi, pods: "110"}
  capacity: {cpu: "32", memory: 256Gi, pods: "110"}
`;
}
