// A real node for the dev cluster: containerd and runc (Debian) running the
// images built by images.ts, a kubelet registered with the API server, pod
// networking on a bridge with host-local IPAM (CNI plugins from Debian),
// kube-proxy in iptables mode and CoreDNS for <svc>.<ns>.svc names. Everything
// stays on this machine: the bridge's subnet is private, forwarding out of it is
// dropped, and CoreDNS answers only cluster names.
//
// The machine mounts cgroup v1 controllers with a cgroup2 hierarchy beside them
// (hybrid), so the kubelet runs with the cgroupfs driver and failCgroupV1: false;
// runc works there (crun refuses hybrid mode). Without CAP_SYS_RESOURCE a
// sandbox cannot lower its oom_score_adj, hence restrict_oom_score_adj.
//
// Everything made is recorded in made.ts's file first; cleanup.ts undoes it.
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import type { ManagedProcess } from '../lib/childproc.ts';
import { findOnPath, isProcessAlive } from '../lib/childproc.ts';
import { freePort } from '../lib/ports.ts';
import { waitFor } from '../lib/time.ts';
import { hotstandbyCacheRoot, type NodeBinaries } from './binaries.ts';
import { IPTABLES, NETNS_DIR, POD_LOGS_DIR, cgroupDirs, cleanupRealNode, listChains, machineDirEntries } from './cleanup.ts';
import { buildImages, refString, type BuiltImage } from './images.ts';
import type { Made } from './made.ts';
import { signClientCert, type Pki } from './pki.ts';

const run = promisify(execFile);

/** The pods' network: a private /24 on a bridge of this machine. The API server, kubelet and CoreDNS listen on its gateway. */
export const NODE_NETWORK = { bridge: 'hsdev0', subnet: '10.244.0.0/24', gateway: '10.244.0.1', prefix: 24 } as const;
export const NODE_NAME = 'hotstandby-node';
/** The dev cluster's Service addresses (the API server's --service-cluster-ip-range). */
export const SERVICE_CIDR = '10.96.0.0/16';
/** The kubelet's cgroup root, in every hierarchy: ours alone, removed by cleanup. */
export const CGROUP_ROOT = 'hotstandby-dev';
export const CLUSTER_DOMAIN = 'cluster.local';
/** One real node per machine: kube-proxy's iptables chains and the bridge are machine-wide. */
export const LOCK_FILE = '/run/hotstandby-realnode.lock';
const CNI_BIN_DIRS = ['/usr/lib/cni', '/opt/cni/bin'];
const DEBIAN_PACKAGES = 'containerd runc containernetworking-plugins iptables conntrack mmdebstrap umoci';
const READY_TIMEOUT_MS = 180_000;

export class RealNodeUnavailableError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'RealNodeUnavailableError';
  }
}

/** Why a real node cannot start here, or undefined when it can (root, the Debian tools, the CNI plugins). */
export function realNodeUnavailable(): string | undefined {
  if (process.getuid?.() !== 0) return 'the real node needs root (containerd, the kubelet, iptables and mounts)';
  const missing = ['containerd', 'runc', 'ctr', 'iptables', 'ip6tables', 'conntrack', 'ip', 'mmdebstrap', 'umoci'].filter((t) => !findOnPath(t));
  if (missing.length > 0) return `missing ${missing.join(', ')}; install them with: bash scripts/install-node-packages.sh (Debian: apt-get install ${DEBIAN_PACKAGES})`;
  if (!cniBinDir()) return `the CNI plugins (bridge, host-local, loopback, portmap) are not in ${CNI_BIN_DIRS.join(' or ')}; install containernetworking-plugins`;
  if (!fs.existsSync('/sys/fs/cgroup')) return 'no cgroup file system at /sys/fs/cgroup';
  return undefined;
}

function cniBinDir(): string | undefined {
  return CNI_BIN_DIRS.find((d) => ['bridge', 'host-local', 'loopback', 'portmap'].every((p) => fs.existsSync(path.join(d, p))));
}

/** Where the node keeps what outlives one run: containerd's content store (imported images). */
export function nodeCacheDir(): string {
  return path.join(hotstandbyCacheRoot(), 'realnode');
}

/**
 * Takes the machine's single real-node lock and makes the pods' bridge, so the
 * API server can listen on its gateway. Run before the control plane starts.
 */
export async function prepareNodeNetwork(made: Made, progress: (line: string) => void): Promise<void> {
  const why = realNodeUnavailable();
  if (why) throw new RealNodeUnavailableError(why);
  await takeLock(made, progress);
  progress(`network: bridge ${NODE_NETWORK.bridge} ${NODE_NETWORK.gateway}/${NODE_NETWORK.prefix}`);
  const chainsBefore: Record<string, Record<string, string[]>> = {};
  for (const cmd of IPTABLES) chainsBefore[cmd] = await listChains(cmd);
  made.update((r) => {
    r.chainsBefore = chainsBefore;
    r.netnsBefore = fs.existsSync(NETNS_DIR) ? fs.readdirSync(NETNS_DIR) : [];
    r.podLogsBefore = fs.existsSync(POD_LOGS_DIR) ? fs.readdirSync(POD_LOGS_DIR) : [];
    r.entriesBefore = machineDirEntries();
    r.bridge = NODE_NETWORK.bridge;
  });
  if (fs.existsSync(`/sys/class/net/${NODE_NETWORK.bridge}`)) {
    throw new Error(`the bridge ${NODE_NETWORK.bridge} exists already: another real node, or one left behind. Stop it with hotstandby dev-cluster down`);
  }
  await run('ip', ['link', 'add', NODE_NETWORK.bridge, 'type', 'bridge']);
  await run('ip', ['addr', 'add', `${NODE_NETWORK.gateway}/${NODE_NETWORK.prefix}`, 'dev', NODE_NETWORK.bridge]);
  await run('ip', ['link', 'set', NODE_NETWORK.bridge, 'up']);
  // Service addresses go to the bridge, never to the default route: an address kube-proxy has
  // no rule for then fails here instead of leaving the machine. The route goes with the bridge.
  await run('ip', ['route', 'add', SERVICE_CIDR, 'dev', NODE_NETWORK.bridge, 'src', NODE_NETWORK.gateway]);
  // Routing between pods and Service addresses (DNAT to a pod on the same bridge) needs forwarding and
  // bridged traffic seen by iptables. Forwarding out of the pods' subnet is dropped below: nothing leaves.
  setSysctl(made, 'net/ipv4/ip_forward', '1');
  setSysctl(made, 'net/bridge/bridge-nf-call-iptables', '1');
  const guard = 'HOTSTANDBY-DEV-EGRESS';
  await run('iptables', ['-w', '5', '-N', guard]);
  await run('iptables', ['-w', '5', '-A', guard, '-s', NODE_NETWORK.subnet, '!', '-d', NODE_NETWORK.subnet, '-j', 'DROP']);
  await run('iptables', ['-w', '5', '-I', 'FORWARD', '1', '-j', guard]);
}

async function takeLock(made: Made, progress: (line: string) => void): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    try {
      fs.writeFileSync(LOCK_FILE, JSON.stringify({ pid: process.pid, record: made.file }), { flag: 'wx' });
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST' || attempt > 0) throw err;
    }
    let holder: { pid?: number; record?: string } = {};
    try {
      holder = JSON.parse(fs.readFileSync(LOCK_FILE, 'utf8')) as typeof holder;
    } catch {
      // unreadable: treated as left behind
    }
    if (holder.pid && isProcessAlive(holder.pid)) {
      throw new Error(`another real node runs on this machine (pid ${holder.pid}, record ${holder.record}); only one can (its iptables chains and bridge are machine-wide). Stop it first: hotstandby dev-cluster down`);
    }
    // Its owner died without cleaning up (killed, or the machine's tests were stopped): undo what it recorded.
    if (holder.record && fs.existsSync(holder.record)) {
      progress(`cleaning up a real node left behind by pid ${holder.pid ?? '?'} (${holder.record})`);
      const errors = await cleanupRealNode(holder.record, progress);
      if (errors.length > 0) throw new Error(`a real node left behind by pid ${holder.pid ?? '?'} could not be cleaned up:\n  ${errors.join('\n  ')}`);
    }
    fs.rmSync(LOCK_FILE, { force: true });
  }
  made.update((r) => {
    r.lock = LOCK_FILE;
  });
}

function setSysctl(made: Made, key: string, value: string): void {
  const file = `/proc/sys/${key}`;
  const old = fs.readFileSync(file, 'utf8').trim();
  if (old === value) return;
  made.update((r) => {
    r.sysctls[file] ??= old;
  });
  fs.writeFileSync(file, value);
}

export interface RealNodeOptions {
  workDir: string;
  made: Made;
  binaries: NodeBinaries;
  pki: Pki;
  /** https://<gateway>:PORT */
  server: string;
  /** An admin kubeconfig (kube-proxy and CoreDNS read Services with it). */
  kubeconfig: string;
  kubectl(args: string[]): Promise<string>;
  progress: (line: string) => void;
  /** Adds a child process to the cluster's (so a crash is noticed and it is stopped). */
  spawn(name: string, command: string, args: string[], env?: NodeJS.ProcessEnv): ManagedProcess;
  untilOneExits<T>(work: Promise<T>): Promise<T>;
}

export interface RealNode {
  name: string;
  images: BuiltImage[];
  containerdAddress: string;
}

/** The API server's client certificate for kubelets; made before the API server starts. */
export function kubeletClientCert(pki: Pki, workDir: string): { cert: string; key: string } {
  return signClientCert(pki, path.join(workDir, 'pki'), 'apiserver-kubelet-client', 'kube-apiserver-kubelet-client', 'system:masters');
}

/** Starts containerd, imports the images, starts the kubelet, kube-proxy and CoreDNS, and waits for the node to be Ready. */
export async function startRealNode(o: RealNodeOptions): Promise<RealNode> {
  const { made, progress } = o;
  const dir = path.join(o.workDir, 'node');
  fs.mkdirSync(dir, { recursive: true });
  const containerdRoot = path.join(nodeCacheDir(), 'containerd');
  const containerdState = path.join(dir, 'containerd-state');
  const kubeletRoot = path.join(dir, 'kubelet');
  const address = path.join(dir, 'containerd.sock');
  made.update((r) => {
    r.mountRoots = [...new Set([...r.mountRoots, dir, containerdRoot])];
    r.containerdAddress = address;
    r.cgroupRoot = CGROUP_ROOT;
  });

  progress('images (built without Docker; cached by content)');
  const images = await buildImages({ progress });

  progress('containerd');
  const pause = images.find((i) => i.name === 'pause')!;
  const cniConfDir = path.join(dir, 'cni', 'net.d');
  writeCniConfig(cniConfDir, path.join(dir, 'cni', 'ipam'));
  const containerdConfig = path.join(dir, 'containerd.toml');
  fs.writeFileSync(containerdConfig, containerdToml({ root: containerdRoot, state: containerdState, address, sandboxImage: refString(pause.ref), cniBinDir: cniBinDir()!, cniConfDir }));
  const containerd = o.spawn('containerd', findOnPath('containerd')!, ['--config', containerdConfig]);
  recordProcess(made, 'containerd', containerd);
  await o.untilOneExits(waitFor(async () => run('ctr', ['--address', address, 'version'], { timeout: 5000 }).then(() => true, () => false), { timeoutMs: 60_000, intervalMs: 300, what: `containerd on ${address} (log: ${containerd.logFile})` }));

  progress('importing images into containerd');
  for (const image of images) await importImage(address, image, progress);

  progress('kubelet');
  const cgroupsMade = ensureCgroupRoot();
  if (cgroupsMade.length === 0) throw new Error('could not make the kubelet cgroup root in any hierarchy');
  const nodeCert = signClientCert(o.pki, path.join(dir, 'pki'), 'kubelet-client', `system:node:${NODE_NAME}`, 'system:nodes');
  const caData = fs.readFileSync(o.pki.caCert).toString('base64');
  const kubeletKubeconfig = path.join(dir, 'kubelet.kubeconfig');
  fs.writeFileSync(kubeletKubeconfig, certKubeconfig(o.server, caData, nodeCert, 'kubelet'), { mode: 0o600 });
  const resolvConf = path.join(dir, 'resolv.conf');
  // Pods get the cluster DNS from clusterDNS; this file only adds nothing of the host's own DNS set-up.
  fs.writeFileSync(resolvConf, '# no upstream: the dev cluster resolves only cluster names\n');
  const kubeletPort = await freePort();
  const kubeletConfig = path.join(dir, 'kubelet.yaml');
  fs.writeFileSync(kubeletConfig, kubeletYaml({ caFile: o.pki.caCert, port: kubeletPort, healthzPort: await freePort(), address, resolvConf, pluginDir: path.join(dir, 'volume-plugins') }));
  const kubelet = o.spawn('kubelet', o.binaries.kubelet, [
    `--config=${kubeletConfig}`,
    `--kubeconfig=${kubeletKubeconfig}`,
    `--root-dir=${kubeletRoot}`,
    `--cert-dir=${path.join(dir, 'kubelet-pki')}`,
    `--hostname-override=${NODE_NAME}`,
    `--node-ip=${NODE_NETWORK.gateway}`,
    '--v=1',
  ]);
  recordProcess(made, 'kubelet', kubelet);

  progress('kube-proxy (iptables)');
  const proxyConfig = path.join(dir, 'kube-proxy.yaml');
  fs.writeFileSync(proxyConfig, kubeProxyYaml({ kubeconfig: o.kubeconfig, healthzPort: await freePort(), metricsPort: await freePort() }));
  const proxy = o.spawn('kube-proxy', o.binaries.kubeProxy, [`--config=${proxyConfig}`, '--v=1']);
  recordProcess(made, 'kube-proxy', proxy);

  progress('CoreDNS');
  const corefile = path.join(dir, 'Corefile');
  const dnsReadyPort = await freePort();
  fs.writeFileSync(corefile, corefileText({ kubeconfig: o.kubeconfig, healthPort: await freePort(), readyPort: dnsReadyPort }));
  const coredns = o.spawn('coredns', o.binaries.coredns, ['-conf', corefile]);
  recordProcess(made, 'coredns', coredns);

  progress(`waiting for node ${NODE_NAME} Ready`);
  await o.untilOneExits(
    waitFor(
      async () => {
        const ready = await o.kubectl(['get', 'node', NODE_NAME, '-o', 'jsonpath={.status.conditions[?(@.type=="Ready")].status}']).catch(() => '');
        return ready.trim() === 'True';
      },
      { timeoutMs: READY_TIMEOUT_MS, intervalMs: 1000, what: `node ${NODE_NAME} Ready (kubelet log: ${kubelet.logFile})` },
    ),
  );
  await o.untilOneExits(
    waitFor(async () => (await fetch(`http://127.0.0.1:${dnsReadyPort}/ready`).then((r) => r.ok, () => false)), {
      timeoutMs: 60_000,
      intervalMs: 500,
      what: `CoreDNS ready (log: ${coredns.logFile})`,
    }),
  );
  return { name: NODE_NAME, images, containerdAddress: address };
}

function recordProcess(made: Made, name: string, p: ManagedProcess): void {
  const pid = p.pid;
  if (pid === undefined) return;
  made.update((r) => {
    r.processes[name] = { pid, command: p.child.spawnfile };
  });
}

/** Imports an OCI archive under its repository name unless containerd already has that exact manifest. */
async function importImage(address: string, image: BuiltImage, progress: (line: string) => void): Promise<void> {
  const ref = refString(image.ref);
  const want = await manifestDigest(image.archive);
  const ctr = (args: string[]): Promise<string> => run('ctr', ['--address', address, '--namespace', 'k8s.io', ...args], { timeout: 300_000, maxBuffer: 16 * 1024 * 1024 }).then((r) => r.stdout);
  const have = (await ctr(['images', 'ls'])).split('\n').find((l) => l.split(/\s+/)[0] === ref)?.split(/\s+/)[2];
  if (have === want) {
    progress(`  ${ref}: present`);
    return;
  }
  const started = Date.now();
  await ctr(['images', 'import', '--base-name', image.ref.repository, image.archive]);
  const now = (await ctr(['images', 'ls'])).split('\n').find((l) => l.split(/\s+/)[0] === ref)?.split(/\s+/)[2];
  if (now !== want) throw new Error(`importing ${image.archive} did not make ${ref} (${want}) in containerd`);
  progress(`  ${ref}: imported in ${Math.round((Date.now() - started) / 1000)} s`);
}

async function manifestDigest(archive: string): Promise<string> {
  const { stdout } = await run('tar', ['-xOf', archive, './index.json']);
  const index = JSON.parse(stdout) as { manifests?: Array<{ digest: string }> };
  const digest = index.manifests?.[0]?.digest;
  if (!digest) throw new Error(`${archive} has no manifest in its index.json`);
  return digest;
}

/** The kubelet's cgroup root in every v1 controller hierarchy (the kubelet expects it to exist). */
function ensureCgroupRoot(): string[] {
  const made: string[] = [];
  for (const h of fs.readdirSync('/sys/fs/cgroup')) {
    const d = path.join('/sys/fs/cgroup', h, CGROUP_ROOT);
    try {
      fs.mkdirSync(d, { recursive: true });
      made.push(d);
    } catch {
      // a hierarchy that does not take new groups (none expected)
    }
  }
  return made.length > 0 ? made : cgroupDirs(CGROUP_ROOT);
}

function writeCniConfig(confDir: string, ipamDir: string): void {
  fs.mkdirSync(confDir, { recursive: true });
  const conf = {
    cniVersion: '1.0.0',
    name: 'hotstandby-dev',
    plugins: [
      {
        type: 'bridge',
        bridge: NODE_NETWORK.bridge,
        isGateway: true,
        // No masquerade: pod traffic never leaves this machine (the egress guard drops it).
        ipMasq: false,
        hairpinMode: true,
        ipam: {
          type: 'host-local',
          ranges: [[{ subnet: NODE_NETWORK.subnet, gateway: NODE_NETWORK.gateway }]],
          routes: [{ dst: '0.0.0.0/0' }],
          dataDir: ipamDir,
        },
      },
      { type: 'portmap', capabilities: { portMappings: true } },
    ],
  };
  fs.writeFileSync(path.join(confDir, '10-hotstandby-dev.conflist'), JSON.stringify(conf, null, 2));
}

function containerdToml(c: { root: string; state: string; address: string; sandboxImage: string; cniBinDir: string; cniConfDir: string }): string {
  return `# containerd for the hotstandby dev cluster's real node (src/devcluster/realnode.ts).
version = 2
root = ${JSON.stringify(c.root)}
state = ${JSON.stringify(c.state)}
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.tracing.processor.v1.otlp"]

[grpc]
  address = ${JSON.stringify(c.address)}

[ttrpc]
  address = ${JSON.stringify(`${c.address}.ttrpc`)}

[plugins."io.containerd.grpc.v1.cri"]
  # Imported locally (images.ts): nothing can be pulled.
  sandbox_image = ${JSON.stringify(c.sandboxImage)}
  # Without CAP_SYS_RESOURCE a container cannot lower its oom_score_adj below containerd's.
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = ${JSON.stringify(findOnPath('runc') ?? 'runc')}
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = ${JSON.stringify(c.cniBinDir)}
    conf_dir = ${JSON.stringify(c.cniConfDir)}
    max_conf_num = 1

[plugins."io.containerd.internal.v1.opt"]
  path = ${JSON.stringify(path.join(c.root, 'opt'))}
`;
}

function kubeletYaml(c: { caFile: string; port: number; healthzPort: number; address: string; resolvConf: string; pluginDir: string }): string {
  return `# The dev cluster's real kubelet (src/devcluster/realnode.ts).
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: ${NODE_NETWORK.gateway}
port: ${c.port}
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: ${c.healthzPort}
containerRuntimeEndpoint: unix://${c.address}
# The machine mounts cgroup v1 controllers (hybrid): cgroupfs, and v1 accepted.
cgroupDriver: cgroupfs
failCgroupV1: false
cgroupRoot: /${CGROUP_ROOT}
failSwapOn: false
enforceNodeAllocatable: []
protectKernelDefaults: false
# Only clients with a certificate from the cluster's CA (the API server) may call it.
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: ${JSON.stringify(c.caFile)}}
authorization:
  mode: AlwaysAllow
clusterDNS: [${NODE_NETWORK.gateway}]
clusterDomain: ${CLUSTER_DOMAIN}
resolvConf: ${JSON.stringify(c.resolvConf)}
volumePluginDir: ${JSON.stringify(c.pluginDir)}
# The images were imported, not pulled, and cannot be pulled again: never collect them.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%"}
serializeImagePulls: false
maxPods: 110
registerNode: true
rotateCertificates: false
serverTLSBootstrap: false
`;
}

function kubeProxyYaml(c: { kubeconfig: string; healthzPort: number; metricsPort: number }): string {
  return `# The dev cluster's kube-proxy (src/devcluster/realnode.ts): iptables mode, and no
# change to the machine's conntrack sysctls or route_localnet.
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clientConnection:
  kubeconfig: ${JSON.stringify(c.kubeconfig)}
hostnameOverride: ${NODE_NAME}
bindAddress: ${NODE_NETWORK.gateway}
healthzBindAddress: 127.0.0.1:${c.healthzPort}
metricsBindAddress: 127.0.0.1:${c.metricsPort}
clusterCIDR: ${NODE_NETWORK.subnet}
nodePortAddresses: ["${NODE_NETWORK.gateway}/32"]
iptables:
  localhostNodePorts: false
  masqueradeAll: false
  syncPeriod: 30s
  minSyncPeriod: 1s
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
  udpTimeout: 0s
  udpStreamTimeout: 0s
`;
}

function corefileText(c: { kubeconfig: string; healthPort: number; readyPort: number }): string {
  return `# The dev cluster's DNS (src/devcluster/realnode.ts): cluster names only, no forwarding.
.:53 {
    bind ${NODE_NETWORK.gateway}
    errors
    health 127.0.0.1:${c.healthPort}
    ready 127.0.0.1:${c.readyPort}
    kubernetes ${CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {
        kubeconfig ${c.kubeconfig}
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }
    cache 30
    loadbalance
}
`;
}

function certKubeconfig(server: string, caData: string, cert: { cert: string; key: string }, user: string): string {
  return `apiVersion: v1
kind: Config
clusters:
- name: dev
  cluster:
    server: ${server}
    certificate-authority-data: ${caData}
users:
- name: ${user}
  user:
    client-certificate: ${cert.cert}
    client-key: ${cert.key}
contexts:
- name: dev
  context: {cluster: dev, user: ${user}}
current-context: dev
`;
}

/** Undoes everything the node made (see cleanup.ts); throws with every step that failed. */
export async function cleanupNode(made: Made, log: (line: string) => void = () => undefined): Promise<void> {
  const errors = await cleanupRealNode(made.file, log);
  if (errors.length > 0) throw new Error(`cleaning up the real node left:\n  ${errors.join('\n  ')}\nrun hotstandby dev-cluster down again, or remove them by hand`);
}
