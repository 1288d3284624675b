// Where the Dragonfly binary is looked for, which stream server is chosen, and
// the flags Dragonfly is started with (the same locally as the operator's managed one).
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { LOCAL_ONLY_DRAGONFLY_FLAGS, builtDragonfly, dragonflyBinaryPath, localDragonflyArgs } from '../../src/lib/dragonfly.ts';
import { dragonflyArgs, dragonflySizing } from '../../src/operator/builders/dragonfly.ts';
import { InvalidStreamServerError, chooseStreamServer, parseStreamServerKind } from '../../src/lib/localstores.ts';

const ROOT = path.resolve(import.meta.dirname, '../..');
const saved = { cache: process.env.HOTSTANDBY_CACHE, server: process.env.HOTSTANDBY_STREAM_SERVER };

afterEach(() => {
  for (const [name, value] of [['HOTSTANDBY_CACHE', saved.cache], ['HOTSTANDBY_STREAM_SERVER', saved.server]] as const) {
    if (value === undefined) delete process.env[name];
    else process.env[name] = value;
  }
});

function printPath(cache: string): { path: string; built: boolean } {
  try {
    return { path: execFileSync('bash', ['scripts/build-dragonfly.sh', '--print-path'], { cwd: ROOT, encoding: 'utf8', env: { ...process.env, HOTSTANDBY_CACHE: cache } }).trim(), built: true };
  } catch (err) {
    return { path: String((err as { stdout: string }).stdout).trim(), built: false };
  }
}

describe('the cached Dragonfly binary', () => {
  it('is where scripts/build-dragonfly.sh puts it, under $HOTSTANDBY_CACHE, keyed by version and build inputs', () => {
    const cache = fs.mkdtempSync(path.join(os.tmpdir(), 'hs-cache-'));
    try {
      process.env.HOTSTANDBY_CACHE = cache;
      delete process.env.HOTSTANDBY_STREAM_SERVER;
      const fromScript = printPath(cache);
      expect(fromScript.built).toBe(false);
      expect(dragonflyBinaryPath()).toBe(fromScript.path);
      expect(fromScript.path).toMatch(new RegExp(`^${cache}/dragonfly/v\\d+\\.\\d+\\.\\d+-[0-9a-f]{12}/dragonfly$`));
      expect(builtDragonfly()).toBeUndefined();
      expect(chooseStreamServer()).toBe('redis');

      fs.mkdirSync(path.dirname(fromScript.path), { recursive: true });
      fs.writeFileSync(fromScript.path, '#!/bin/sh\n', { mode: 0o755 });
      expect(printPath(cache).built).toBe(true);
      expect(builtDragonfly()).toBe(fromScript.path);
      expect(chooseStreamServer()).toBe('dragonfly');
      process.env.HOTSTANDBY_STREAM_SERVER = 'redis';
      expect(chooseStreamServer()).toBe('redis');
      expect(chooseStreamServer('dragonfly')).toBe('dragonfly');
    } finally {
      fs.rmSync(cache, { recursive: true, force: true });
    }
  });
});

describe('choosing the stream server', () => {
  it('names the flag or variable and the accepted values on a bad value', () => {
    expect(parseStreamServerKind('dragonfly', '--stream-server')).toBe('dragonfly');
    expect(() => parseStreamServerKind('keydb', '--stream-server')).toThrow('--stream-server: "keydb" is not a stream server; use dragonfly or redis');
    process.env.HOTSTANDBY_STREAM_SERVER = 'Redis';
    expect(() => chooseStreamServer()).toThrow(InvalidStreamServerError);
    expect(() => chooseStreamServer()).toThrow(/HOTSTANDBY_STREAM_SERVER: "Redis"/);
  });
});

describe('Dragonfly flags', () => {
  const flagName = (arg: string): string => arg.split('=')[0]!;

  it('lock on hash tags by default, never cache mode, snapshots on a schedule, no call home, loopback only locally', () => {
    expect(localDragonflyArgs({ port: 7000, dir: '/data', dbfilename: 'hs' })).toEqual([
      '--port=7000',
      '--lock_on_hashtags',
      '--dir=/data',
      '--dbfilename=hs',
      '--snapshot_cron=* * * * *',
      '--cache_mode=false',
      `--maxmemory=${1024 * 2 ** 20}`,
      '--proactor_threads=2',
      '--version_check=false',
      '--bind=127.0.0.1',
      '--logtostderr',
    ]);
    expect(localDragonflyArgs({ port: 1, dir: '/d', dbfilename: 'x', lockOnHashtags: false, replicaOf: '10.0.0.1:6379' })).toEqual(
      expect.arrayContaining(['--lock_on_hashtags=false', '--replicaof=10.0.0.1:6379']),
    );
  });

  it("the local Dragonfly runs the managed one's flags, plus only the local-only ones", () => {
    const managed = dragonflyArgs(dragonflySizing({})).map(flagName);
    const local = localDragonflyArgs({ port: 1, dir: '/d', dbfilename: 'x', replicaOf: 'h:1' }).map(flagName);
    expect(local.filter((f) => !LOCAL_ONLY_DRAGONFLY_FLAGS.includes(f))).toEqual(managed);
    expect(local.filter((f) => LOCAL_ONLY_DRAGONFLY_FLAGS.includes(f))).toEqual([...LOCAL_ONLY_DRAGONFLY_FLAGS]);
  });
});
