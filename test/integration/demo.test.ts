// The demo as a user runs it, and its promise: 20 consecutive failovers under
// write load with no acknowledged write lost; Ctrl-C leaves no child behind.
import { spawn } from 'node:child_process';
import path from 'node:path';
import { expect, it } from 'vitest';
import { runDemo } from '../../src/demo/run.ts';
import { waitFor } from '../../src/lib/time.ts';
import { isProcessAlive as alive } from '../../src/lib/childproc.ts';
import { describeEachStreamServer } from '../harness/stores.ts';
import { descendants } from '../harness/processes.ts';

const BIN = path.resolve(import.meta.dirname, '../../bin/hotstandby.js');

describeEachStreamServer('hotstandby demo', (streamServer) => {
  it('20 consecutive failovers, then master crashes with their agents alive, under load lose no acknowledged write', async () => {
    const progress: string[] = [];
    const summary = await runDemo({
      members: 3,
      leaseTtlSeconds: 2,
      intervalSeconds: 0,
      failovers: 20,
      switchovers: 2,
      masterCrashes: 3,
      rate: 150,
      streamServer,
      progress: (line) => progress.push(line),
      signal: new AbortController().signal,
    });
    expect(summary.streamServer).toBe(streamServer);
    expect(summary.failovers).toBe(20);
    expect(summary.switchovers).toBe(2);
    expect(summary.runs.masterCrashMs).toHaveLength(3);
    expect(progress.filter((l) => l.startsWith('master crash '))).toHaveLength(3);
    expect(summary.ackedWrites).toBeGreaterThan(500);
    expect(summary.lostWrites).toBe(0);
    expect(summary.failoverMs!.max).toBeGreaterThan(0);
    expect(progress.filter((l) => l.startsWith('failover '))).toHaveLength(20);
  }, 300_000);

  it('Ctrl-C ends the demo with a summary and leaves no child process behind', async () => {
    const child = spawn(process.execPath, [BIN, 'demo', '--failovers', '100', '--lease-ttl', '2', '--interval', '1', '--stream-server', streamServer, '--json'], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    try {
      await waitFor(() => stderr.includes('failover 1:'), { timeoutMs: 60_000, what: `the first failover; stderr so far:\n${stderr}` });
      const spawned = descendants(child.pid!);
      expect(spawned.length).toBeGreaterThanOrEqual(8); // etcd, redis, 3 agents, 3 masters
      child.kill('SIGINT');
      const code = await Promise.race([exited, new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), 30_000))]);
      expect(code).toBe(0);
      const summary = JSON.parse(stdout) as { failovers: number; lostWrites: number; streamServer: string };
      expect(summary.streamServer).toBe(streamServer);
      expect(summary.failovers).toBeGreaterThanOrEqual(1);
      expect(summary.lostWrites).toBe(0);
      await waitFor(() => spawned.every((p) => !alive(p)), { timeoutMs: 10_000, what: 'every child of the demo to be gone' });
    } finally {
      child.kill('SIGKILL');
    }
  }, 120_000);
});
