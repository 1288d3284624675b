// What the real node changed on this machine, written to a file as each thing
// is made (before it is made, where a crash could leave it half made), so that
// `dev-cluster down` can undo all of it even after a failed start or a killed
// supervisor. cleanup.ts reads it.
import fs from 'node:fs';

export interface MadeRecord {
  /** The file that holds the single-real-node lock, released last. */
  lock?: string;
  /** Processes started, by name: killed when still alive and still running `command`. */
  processes: Record<string, { pid: number; command: string }>;
  /** containerd's socket, for removing the containers it runs. */
  containerdAddress?: string;
  /** The bridge the pods are attached to. */
  bridge?: string;
  /** sysctl files changed, with the value before. */
  sysctls: Record<string, string>;
  /** iptables/ip6tables chains that existed before, per command and table; new ones are removed. */
  chainsBefore?: Record<string, Record<string, string[]>>;
  /** Network namespaces in /run/netns before the node started; new cni-* ones are removed. */
  netnsBefore?: string[];
  /** Pod log directories in /var/log/pods before; new ones are removed. */
  podLogsBefore?: string[];
  /**
   * Machine-wide directories the kubelet, containerd and the CNI plugins write to whatever their
   * configuration says (kubelet device plugins, container log links, runc state, shim sockets,
   * CNI result cache), with their entries before; null when the directory did not exist.
   */
  entriesBefore?: Record<string, string[] | null>;
  /** The kubelet's cgroup root, removed in every hierarchy. */
  cgroupRoot?: string;
  /** Directories under which every mount is the node's (kubelet volumes, container roots). */
  mountRoots: string[];
}

export class Made {
  readonly file: string;
  readonly record: MadeRecord;

  constructor(file: string) {
    this.file = file;
    this.record = Made.read(file) ?? { processes: {}, sysctls: {}, mountRoots: [] };
  }

  static read(file: string): MadeRecord | undefined {
    try {
      return JSON.parse(fs.readFileSync(file, 'utf8')) as MadeRecord;
    } catch {
      return undefined;
    }
  }

  /** Changes the record and writes it before returning. */
  update(change: (r: MadeRecord) => void): void {
    change(this.record);
    fs.writeFileSync(`${this.file}.tmp`, JSON.stringify(this.record, null, 2));
    fs.renameSync(`${this.file}.tmp`, this.file);
  }
}
