// A stand-in kubelet for the masters' pods on kwok nodes, where nothing runs.
//
// It follows the pods of one HotStandbyCluster in a real apiserver and, for
// each pod, runs what the pod would run as local processes: the agent with the
// env and args the operator put in the pod's `agent` sidecar (downward-API
// fields resolved, Secrets read, addresses moved to free loopback ports so
// several pods fit on one host), and the reference master beside it. A pod
// that gets a deletionTimestamp has its processes stopped with SIGTERM, as a
// kubelet would, and only once they have exited does the stand-in delete the
// pod object (grace period 0, as a kubelet confirms a deletion): the stand-in
// annotates each pod it runs so that kwok leaves that last step to it. So a
// pod that is gone from the apiserver has no processes left, as on a real
// node. A new pod of the same name (a rollout) gets new processes.
// With pod labels on, each agent talks to the apiserver with a token of the
// pod's own ServiceAccount, so the agents' RBAC is exercised for real.
import fs from 'node:fs';
import path from 'node:path';
import { CoreV1Api, KubeConfig, PatchStrategy, setHeaderOptions, type V1EnvVar, type V1Pod } from '@kubernetes/client-node';
import type { Member } from '../../src/demo/localcluster.ts';
import { ManagedProcess } from '../../src/lib/childproc.ts';
import { CLUSTER_LABEL } from '../../src/lib/labels.ts';
import { freePort, waitForPort } from '../../src/lib/ports.ts';
import { sleep, withTimeout } from '../../src/lib/time.ts';
import type { DevCluster } from '../../src/devcluster/cluster.ts';
import { LOCAL_RUNNER_ANNOTATION } from '../../src/devcluster/kwok-stages.ts';

const BIN = path.resolve(import.meta.dirname, '../../bin/hotstandby.js');
const POLL_MS = 200;
/** Bound on each apiserver call the stand-in makes. */
const API_TIMEOUT_MS = 5000;
/** SIGTERM to SIGKILL, as a pod's terminationGracePeriodSeconds would. */
const STOP_GRACE_MS = 5000;

export interface StandInMember extends Member {
  uid: string;
  /** Env the agent was started with (after resolution), for assertions. */
  agentEnv: Record<string, string>;
  agentArgs: string[];
}

export interface PodStandInsOptions {
  kube: DevCluster;
  namespace: string;
  cluster: string;
  workDir: string;
  /** Give each agent a token of its pod's ServiceAccount and the apiserver's address, so it labels pods. Default true. */
  podLabels?: boolean;
  logLevel?: string;
}

export class PodStandIns {
  private readonly opts: PodStandInsOptions;
  private readonly core: CoreV1Api;
  private readonly running = new Map<string, StandInMember>();
  /** Processes being stopped, by pod uid; the pod object is deleted only after. */
  private readonly stopping = new Map<string, Promise<void>>();
  /** Pods this stand-in annotated, by name: handed back to kwok on stop(). */
  private readonly annotated = new Set<string>();
  private loop: Promise<void> | undefined;
  private readonly stopped = new AbortController();
  private readonly tokens = new Map<string, string>();
  /** Pod names whose processes the test killed on purpose: not restarted until `revive`. */
  private readonly killed = new Set<string>();

  constructor(opts: PodStandInsOptions) {
    this.opts = opts;
    const kc = new KubeConfig();
    kc.loadFromFile(opts.kube.kubeconfig);
    this.core = kc.makeApiClient(CoreV1Api);
  }

  start(): this {
    this.loop = this.run();
    return this;
  }

  /** Members now running, by pod name order. */
  members(): StandInMember[] {
    return [...this.running.values()].sort((a, b) => a.name.localeCompare(b.name));
  }

  member(pod: string): StandInMember | undefined {
    return this.running.get(pod);
  }

  /** kill -9 of the pod's agent and master; they stay down until `revive(pod)`. */
  kill(pod: string): void {
    const m = this.running.get(pod);
    if (!m) throw new Error(`no processes run for pod ${pod}`);
    this.killed.add(pod);
    m.agent.killNow('SIGKILL');
    m.master.killNow('SIGKILL');
  }

  /** Lets the stand-in start the pod's processes again (as a restarted container would). */
  revive(pod: string): void {
    this.killed.delete(pod);
    const m = this.running.get(pod);
    if (m) {
      this.running.delete(pod);
      this.track(m.uid, Promise.allSettled([m.agent.stop(1000), m.master.stop(1000)]).then(() => undefined));
    }
  }

  async waitForPods(count: number, timeoutMs = 60_000): Promise<StandInMember[]> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      const ready = this.members().filter((m) => m.agent.running && m.master.running);
      if (ready.length >= count) return ready;
      await sleep(100);
    }
    throw new Error(`only ${this.members().length} of ${count} pods of ${this.opts.cluster} got processes within ${timeoutMs} ms`);
  }

  async stop(): Promise<void> {
    this.stopped.abort();
    await this.loop?.catch(() => undefined);
    await Promise.allSettled([...this.running.values()].flatMap((m) => [m.master.stop(3000), m.agent.stop(3000)]));
    await Promise.allSettled([...this.stopping.values()]);
    this.running.clear();
    // Nothing runs for these pods any more: give their deletion back to kwok,
    // so a cluster deleted after this does not leave pods Terminating forever.
    await Promise.allSettled([...this.annotated].map((name) => this.annotate(name, null)));
    this.annotated.clear();
  }

  private async run(): Promise<void> {
    while (!this.stopped.signal.aborted) {
      try {
        await this.syncOnce();
      } catch (err) {
        if (!this.stopped.signal.aborted) process.stderr.write(`pod stand-ins: ${(err as Error).message}\n`);
      }
      await sleep(POLL_MS, this.stopped.signal).catch(() => undefined);
    }
  }

  private async syncOnce(): Promise<void> {
    const list = await withTimeout(
      this.core.listNamespacedPod({ namespace: this.opts.namespace, labelSelector: `${CLUSTER_LABEL}=${this.opts.cluster},app.kubernetes.io/component=master` }),
      5000,
      'listing the cluster pods',
    );
    const live = new Map(list.items.map((p) => [p.metadata!.name!, p]));
    for (const [name, m] of this.running) {
      const pod = live.get(name);
      if (!pod || pod.metadata!.uid !== m.uid || pod.metadata!.deletionTimestamp) {
        // The pod is going or gone: stop like a kubelet (SIGTERM, then SIGKILL after the grace period).
        this.running.delete(name);
        this.track(m.uid, Promise.allSettled([m.master.stop(STOP_GRACE_MS), m.agent.stop(STOP_GRACE_MS)]).then(() => undefined));
      }
    }
    for (const [name, pod] of live) {
      const uid = pod.metadata!.uid!;
      if (pod.metadata!.deletionTimestamp) {
        // Ours, and its processes have exited (the loop above took it out of
        // `running`; killed by the test or never started counts too): confirm
        // the deletion, as a kubelet does once the containers exited.
        const ours = pod.metadata!.annotations?.[LOCAL_RUNNER_ANNOTATION] !== undefined;
        if (ours && !this.stopping.has(uid)) await this.confirmDeletion(pod);
        continue;
      }
      if (this.running.has(name) || this.killed.has(name) || pod.status?.phase !== 'Running') continue;
      // A pod of the same name may still be stopping: its ports are its own, but wait so logs do not interleave.
      if (this.stopping.size > 0) await Promise.allSettled([...this.stopping.values()]);
      // Annotate before starting anything, so kwok never deletes a pod whose processes run.
      await this.annotate(name, 'pod-stand-ins');
      this.annotated.add(name);
      this.running.set(name, await this.startPod(pod));
    }
  }

  /** Remembers processes being stopped for a pod until they exited. */
  private track(uid: string, done: Promise<void>): void {
    this.stopping.set(uid, done);
    void done.then(() => {
      if (this.stopping.get(uid) === done) this.stopping.delete(uid);
    });
  }

  /** Deletes the pod object now that nothing runs for it; the uid precondition spares a new pod of the same name. */
  private async confirmDeletion(pod: V1Pod): Promise<void> {
    const { name, namespace, uid } = pod.metadata! as { name: string; namespace: string; uid: string };
    try {
      await withTimeout(
        this.core.deleteNamespacedPod({ name, namespace, gracePeriodSeconds: 0, body: { gracePeriodSeconds: 0, preconditions: { uid } } }),
        API_TIMEOUT_MS,
        `deleting pod ${namespace}/${name}`,
      );
    } catch (err) {
      // Gone already, or a new pod holds the name: nothing left to confirm.
      const code = (err as { code?: number }).code;
      if (code !== 404 && code !== 409) throw err;
    }
    this.annotated.delete(name);
  }

  /** Sets (or with null removes) the stand-in's annotation on a pod. */
  private async annotate(name: string, value: string | null): Promise<void> {
    await withTimeout(
      this.core.patchNamespacedPod(
        { name, namespace: this.opts.namespace, body: { metadata: { annotations: { [LOCAL_RUNNER_ANNOTATION]: value } } } },
        setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
      ),
      API_TIMEOUT_MS,
      `annotating pod ${this.opts.namespace}/${name}`,
    );
  }

  private async startPod(pod: V1Pod): Promise<StandInMember> {
    const name = pod.metadata!.name!;
    const agentContainer = [...(pod.spec!.initContainers ?? []), ...pod.spec!.containers].find((c) => c.name === 'agent');
    if (!agentContainer) throw new Error(`pod ${name} has no container named agent`);
    const [kv, api, health] = [await freePort(), await freePort(), await freePort()];
    const dir = path.join(this.opts.workDir, name);
    const env = await this.resolveEnv(pod, agentContainer.env ?? []);
    await this.mountSecrets(pod, agentContainer.volumeMounts ?? [], path.join(dir, 'mounts'), env);
    env.HOTSTANDBY_ADDRESS = `127.0.0.1:${kv}`;
    env.HOTSTANDBY_API_LISTEN = `127.0.0.1:${api}`;
    if (env.HOTSTANDBY_HEALTH_LISTEN) env.HOTSTANDBY_HEALTH_LISTEN = `127.0.0.1:${health}`;
    if (this.opts.podLabels !== false) Object.assign(env, await this.kubeAccess(pod));
    else env.HOTSTANDBY_POD_LABELS = 'off';
    if (this.opts.logLevel) env.HOTSTANDBY_LOG_LEVEL = this.opts.logLevel;
    // The image's entrypoint is `hotstandby`; a command that names it is dropped.
    const argv = [...(agentContainer.command ?? []), ...(agentContainer.args ?? [])].filter((a, i) => !(i === 0 && /(^|\/)hotstandby(\.js)?$/.test(a)));
    const processEnv = { ...process.env, ...env };
    const agent = new ManagedProcess({ name: `${name}-agent`, command: process.execPath, args: [BIN, ...argv], logFile: path.join(dir, `agent-${pod.metadata!.uid}.log`), env: processEnv });
    const master = new ManagedProcess({
      name: `${name}-kvmaster`,
      command: process.execPath,
      args: [BIN, 'kvmaster', '--listen', `127.0.0.1:${kv}`, '--agent-api', `127.0.0.1:${api}`],
      logFile: path.join(dir, `kvmaster-${pod.metadata!.uid}.log`),
      env: processEnv,
    });
    for (const [proc, port] of [[agent, api], [master, kv]] as const) {
      if (!(await waitForPort(port, 30_000).catch(() => false))) {
        // Neither is tracked yet: stop both here, or they would outlive the test.
        await Promise.allSettled([agent.stop(1000), master.stop(1000)]);
        throw new Error(`${proc.name} did not listen on ${port} within 30 s; its log ends with:\n${proc.tail(30)}`);
      }
    }
    return { name, uid: pod.metadata!.uid!, kvAddress: `127.0.0.1:${kv}`, agentApi: `127.0.0.1:${api}`, agent, master, agentEnv: env, agentArgs: argv };
  }

  /** Env as a kubelet would give it: fieldRefs from the pod, secretKeyRefs read, $(VAR) expanded. */
  private async resolveEnv(pod: V1Pod, vars: V1EnvVar[]): Promise<Record<string, string>> {
    const out: Record<string, string> = {};
    for (const v of vars) {
      let value = v.value ?? '';
      const field = v.valueFrom?.fieldRef?.fieldPath;
      if (field === 'metadata.name') value = pod.metadata!.name!;
      else if (field === 'metadata.namespace') value = pod.metadata!.namespace!;
      else if (field === 'status.podIP') value = '127.0.0.1';
      else if (field) throw new Error(`stand-in does not know fieldRef ${field} (env ${v.name})`);
      const secretRef = v.valueFrom?.secretKeyRef;
      if (secretRef) {
        const secret = await this.core.readNamespacedSecret({ name: secretRef.name!, namespace: pod.metadata!.namespace! });
        const data = secret.data?.[secretRef.key];
        if (data === undefined) throw new Error(`secret ${secretRef.name} has no key ${secretRef.key} (env ${v.name})`);
        value = Buffer.from(data, 'base64').toString('utf8');
      }
      out[v.name] = value.replace(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (all, ref: string) => out[ref] ?? all);
    }
    return out;
  }

  /**
   * Secret volumes as a kubelet would mount them: each key a file, in a local
   * directory standing in for the mount path; env values naming a file under
   * the mount path are pointed at the local copy.
   */
  private async mountSecrets(pod: V1Pod, mounts: Array<{ name: string; mountPath: string }>, root: string, env: Record<string, string>): Promise<void> {
    for (const mount of mounts) {
      const secretName = pod.spec!.volumes?.find((v) => v.name === mount.name)?.secret?.secretName;
      if (!secretName) continue;
      const secret = await this.core.readNamespacedSecret({ name: secretName, namespace: pod.metadata!.namespace! });
      const local = path.join(root, mount.name);
      fs.mkdirSync(local, { recursive: true, mode: 0o700 });
      for (const [key, value] of Object.entries(secret.data ?? {})) fs.writeFileSync(path.join(local, key), Buffer.from(value, 'base64'), { mode: 0o600 });
      for (const [k, v] of Object.entries(env)) if (v.startsWith(`${mount.mountPath}/`)) env[k] = path.join(local, v.slice(mount.mountPath.length + 1));
    }
  }

  /** The apiserver address, its CA and a token of the pod's ServiceAccount, as files the agent reads. */
  private async kubeAccess(pod: V1Pod): Promise<Record<string, string>> {
    const sa = pod.spec!.serviceAccountName ?? 'default';
    const ns = pod.metadata!.namespace!;
    const dir = path.join(this.opts.workDir, 'kube');
    fs.mkdirSync(dir, { recursive: true });
    const tokenFile = path.join(dir, `${ns}-${sa}.token`);
    if (!this.tokens.has(tokenFile)) {
      const token = (await this.opts.kube.kubectl(['create', 'token', sa, '-n', ns, '--duration=1h'])).trim();
      fs.writeFileSync(tokenFile, token, { mode: 0o600 });
      this.tokens.set(tokenFile, token);
    }
    return {
      HOTSTANDBY_POD_LABELS: 'on',
      HOTSTANDBY_KUBE_API_SERVER: this.opts.kube.server,
      HOTSTANDBY_KUBE_TOKEN_FILE: tokenFile,
      HOTSTANDBY_KUBE_CA_FILE: path.join(this.opts.kube.workDir, 'pki', 'ca.crt'),
      POD_NAMESPACE: ns,
    };
  }
}
