// Every `hotstandby` subcommand, in the order `hotstandby --help` lists them.
// Only the name and summary live here; a command's module (its help text and
// code) is imported when that command is asked for, so `hotstandby agent`
// never loads what `hotstandby operator` needs (@kubernetes/client-node alone
// costs a process about 45 MB). Each module in turn imports its heavy
// libraries inside run(). test/integration/module-footprint.test.ts checks it.
// Add a command by adding its file and one entry here.
import type { Command } from '../command.ts';

export interface CommandEntry {
  name: string;
  /** One line for `hotstandby --help`. */
  summary: string;
  /** Imports the command's module. */
  load(): Promise<Command>;
}

export const commands: readonly CommandEntry[] = [
  {
    name: 'demo',
    summary: 'live demo: 3 masters under write load, the leader killed every few seconds, zero writes lost',
    load: async () => (await import('./demo.ts')).demoCommand,
  },
  {
    name: 'chaos',
    summary: 'seeded random faults (kill -9, SIGSTOP) under load; checks lost writes and linearizability (Porcupine)',
    load: async () => (await import('./chaos.ts')).chaosCommand,
  },
  {
    name: 'agent',
    summary: 'run the agent beside one master (election, oplog, snapshots, local API)',
    load: async () => (await import('./agent.ts')).agentCommand,
  },
  {
    name: 'kvmaster',
    summary: 'run the reference key-value master beside an agent',
    load: async () => (await import('./kvmaster.ts')).kvmasterCommand,
  },
  {
    name: 'operator',
    summary: 'run the controller: provisions stores, masters and Services; orders updates; reports status',
    load: async () => (await import('./operator.ts')).operatorCommand,
  },
  {
    name: 'status',
    summary: 'show a cluster (from its stores, or by NAME from Kubernetes): leader, members with lag, log head, snapshot',
    load: async () => (await import('./status.ts')).statusCommand,
  },
  {
    name: 'switchover',
    summary: 'move leadership to a chosen standby without losing writes',
    load: async () => (await import('./switchover.ts')).switchoverCommand,
  },
  {
    name: 'dev-cluster',
    summary: 'start or stop a local Kubernetes control plane (no Docker) for trying the operator',
    load: async () => (await import('./dev-cluster.ts')).devClusterCommand,
  },
];
