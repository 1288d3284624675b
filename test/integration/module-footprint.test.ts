// Each process loads only the libraries it uses (issue 10): the agent and the
// reference master run beside every master, so a library they load for
// nothing is paid once per pod. Real `hotstandby agent` and `hotstandby
// kvmaster` processes, on real etcd and redis-server, run until the agent has
// registered and the master serves; a preload (test/harness/module-trace.mjs)
// records every module each one loaded, ESM and CommonJS.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Etcd3 } from 'etcd3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ManagedProcess } from '../../src/lib/childproc.ts';
import { etcdKeys } from '../../src/lib/keys.ts';
import { freePort, isPortOpen } from '../../src/lib/ports.ts';
import { waitFor } from '../../src/lib/time.ts';
import { useStores } from '../harness/stores.ts';

const repo = path.resolve(import.meta.dirname, '../..');
const bin = path.join(repo, 'bin', 'hotstandby.js');
const tracer = path.join(repo, 'test', 'harness', 'module-trace.mjs');

/** The npm packages among the loaded module URLs ("etcd3", "@grpc/grpc-js", ...). */
function packagesOf(urls: string[]): Set<string> {
  const out = new Set<string>();
  for (const url of urls) {
    const m = /node_modules\/((?:@[^/]+\/)?[^/]+)\//.exec(url);
    if (m) out.add(m[1]!);
  }
  return out;
}

function readTrace(file: string): string[] {
  return fs.readFileSync(file, 'utf8').split('\n').filter(Boolean);
}

describe('module footprint of the per-pod processes', () => {
  const stores = useStores();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hs-modules-'));
  const cluster = { namespace: 'test', name: 'modules' };
  let agentModules: Set<string>;
  let masterModules: Set<string>;
  let agentInternals: string[];
  let masterInternals: string[];

  const start = (name: string, args: string[]): ManagedProcess =>
    new ManagedProcess({
      name,
      command: process.execPath,
      args: ['--import', tracer, bin, ...args],
      logFile: path.join(dir, `${name}.log`),
      env: { ...process.env, HOTSTANDBY_FROM_SOURCE: '1', HOTSTANDBY_MODULE_TRACE: path.join(dir, `${name}.modules`) },
    });

  beforeAll(async () => {
    const apiPort = await freePort();
    const kvPort = await freePort();
    const agent = start('agent', [
      'agent', '--cluster', `${cluster.namespace}/${cluster.name}`, '--member', 'm-0', '--address', `127.0.0.1:${kvPort}`,
      '--etcd', stores().etcd.endpoint, '--redis', stores().redis.url, '--api-listen', `127.0.0.1:${apiPort}`, '--log-level', 'warn',
    ]);
    const master = start('kvmaster', ['kvmaster', '--listen', `127.0.0.1:${kvPort}`, '--agent-api', `127.0.0.1:${apiPort}`, '--log-level', 'warn']);
    const etcd = new Etcd3({ hosts: stores().etcd.endpoint });
    try {
      // Long enough for every code path of a running member: registered, serving, leading.
      await waitFor(async () => (await etcd.get(etcdKeys(cluster).member('m-0')).exists()) && (await isPortOpen(kvPort)), {
        timeoutMs: 30_000,
        what: `the agent to register and the master to listen (logs in ${dir})`,
      });
      await waitFor(async () => ((await (await fetch(`http://127.0.0.1:${kvPort}/status`)).json()) as { writable: boolean }).writable, {
        timeoutMs: 30_000,
        what: 'the master to lead',
      });
    } finally {
      etcd.close();
      await Promise.all([master.stop(10_000), agent.stop(10_000)]);
    }
    agentModules = packagesOf(readTrace(path.join(dir, 'agent.modules')));
    masterModules = packagesOf(readTrace(path.join(dir, 'kvmaster.modules')));
    const internals = (file: string): string[] => readTrace(path.join(dir, file)).filter((u) => u.startsWith('node-internal:'));
    agentInternals = internals('agent.modules');
    masterInternals = internals('kvmaster.modules');
  }, 90_000);

  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('the agent never loads @kubernetes/client-node, nor any other command\'s code', () => {
    // It did load its logger: the trace works.
    expect(agentModules).toContain('pino');
    expect(agentModules).not.toContain('@kubernetes/client-node');
    const agentSrc = readTrace(path.join(dir, 'agent.modules')).filter((u) => u.includes('/src/'));
    expect(agentSrc.filter((u) => /\/src\/(operator|devcluster|demo|kvmaster)\/|\/src\/cli\/commands\/(?!agent\.ts|index\.ts)/.test(u))).toEqual([]);
  });

  it('the agent talks to the stream server with its own RESP client, not ioredis (~3 MB private, more once V8 optimises it)', () => {
    expect(agentModules).not.toContain('ioredis');
    const agentSrc = readTrace(path.join(dir, 'agent.modules')).filter((u) => u.includes('/src/'));
    expect(agentSrc.some((u) => u.endsWith('/src/lib/resp/client.ts') || u.endsWith('/lib/resp/client.js'))).toBe(true);
  });

  it('the agent talks to etcd over its JSON gateway: no etcd3, gRPC, protobufjs or http2 (~15 MB and most of its start-up)', () => {
    for (const unused of ['etcd3', '@grpc/grpc-js', '@grpc/proto-loader', 'protobufjs']) expect(agentModules, unused).not.toContain(unused);
    expect(agentInternals.filter((m) => m.includes('http2'))).toEqual([]);
    const agentSrc = readTrace(path.join(dir, 'agent.modules')).filter((u) => u.includes('/src/'));
    expect(agentSrc.some((u) => u.endsWith('/src/lib/etcd-http/client.ts') || u.endsWith('/lib/etcd-http/client.js'))).toBe(true);
  });

  it("neither loads undici (what an ES import of node:http drags in for its WebSocket exports: ~12 MB), nor the master http2", () => {
    expect(agentInternals.length, 'the trace lists Node\'s own modules').toBeGreaterThan(20);
    expect(agentInternals).toContain('node-internal:http');
    expect(masterInternals).toContain('node-internal:http');
    expect(agentInternals.filter((m) => m.includes('undici'))).toEqual([]);
    expect(masterInternals.filter((m) => m.includes('undici') || m.includes('http2'))).toEqual([]);
  });

  it('neither loads what ES imports of built-ins drag in (node:readline, fs/promises, webcrypto, BlockList)', () => {
    // An ES import of node:fs, node:util, node:net or node:crypto evaluates every
    // export, lazy ones too; the per-pod code takes them through
    // process.getBuiltinModule (eslint.config.js). These four are what the agent
    // loaded before that, and nothing of theirs is used.
    const dragged = /^node-internal:internal\/(readline\/interface|fs\/promises|crypto\/webcrypto|blocklist)$/;
    expect(agentInternals.filter((m) => dragged.test(m))).toEqual([]);
    expect(masterInternals.filter((m) => dragged.test(m))).toEqual([]);
  });

  it('the reference master loads no store client and no Kubernetes client: only what it uses', () => {
    expect([...masterModules].sort()).not.toContain('@kubernetes/client-node');
    for (const unused of ['etcd3', 'ioredis', '@grpc/grpc-js', 'protobufjs']) expect(masterModules, unused).not.toContain(unused);
    expect(masterModules).toContain('pino');
  });

  it('the reference master loads neither node:crypto (~1.5 MB for one process id) nor node:readline (its log stream has its own bounded splitter)', () => {
    expect(masterInternals.filter((m) => /^node-internal:(crypto|readline)$/.test(m))).toEqual([]);
    // The agent does use node:crypto (batch ids, snapshot ids, crc of snapshots): the check can see it.
    expect(agentInternals).toContain('node-internal:crypto');
  });
});
