// The real node's image recipe without building anything: the names images
// are imported under, the Dockerfile as the builder reads it, content keys,
// the Dragonfly stand-in's flag translation, and iptables-save rule parsing.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import { splitRule } from '../../src/devcluster/cleanup.ts';
import { contextSources, parseDockerfile } from '../../src/devcluster/dockerfile.ts';
import { imageRefs, parseRef, refString, treeHash } from '../../src/devcluster/images.ts';

const ROOT = path.resolve(import.meta.dirname, '../..');
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'hs-images-unit-'));
afterAll(() => fs.rmSync(work, { recursive: true, force: true }));

describe('image names', () => {
  it("names the project's image as the chart does, so helm install needs no override", () => {
    const values = parseYaml(fs.readFileSync(path.join(ROOT, 'charts/hotstandby-operator/values.yaml'), 'utf8')) as { image: { repository: string; tag: string } };
    const chart = parseYaml(fs.readFileSync(path.join(ROOT, 'charts/hotstandby-operator/Chart.yaml'), 'utf8')) as { appVersion: string };
    expect(refString(imageRefs().operator)).toBe(`${values.image.repository}:${values.image.tag || chart.appVersion}`);
  });

  it('tags the etcd image with the version of the etcd built for it', () => {
    const goMod = fs.readFileSync(path.join(ROOT, 'tools/images/etcd/go.mod'), 'utf8');
    expect(/^require go\.etcd\.io\/etcd\/server\/v3 (v\S+)$/m.exec(goMod)?.[1]).toBe(imageRefs().etcd.tag);
  });

  it("names the store images as the CRD's defaults do, so examples/minimal.yaml needs no override", () => {
    const file = path.join(ROOT, 'src/api/defaults.ts');
    if (!fs.existsSync(file)) return; // src/api/defaults.ts pins them once the operator's builders have landed
    const text = fs.readFileSync(file, 'utf8');
    const pinned = (name: string): string | undefined => new RegExp(`${name} = '([^']+)'`).exec(text)?.[1];
    expect(refString(imageRefs().etcd)).toBe(pinned('ETCD_DEFAULT_IMAGE'));
    expect(refString(imageRefs().dragonfly)).toBe(pinned('DRAGONFLY_DEFAULT_IMAGE'));
  });

  it('refuses a reference without a tag, naming where it came from', () => {
    expect(() => parseRef('quay.io/coreos/etcd', 'ETCD_IMAGE')).toThrow(/ETCD_IMAGE: "quay.io\/coreos\/etcd" is not an image reference/);
    expect(parseRef('localhost:5000/a/b:v1', 'x')).toEqual({ repository: 'localhost:5000/a/b', tag: 'v1' });
  });
});

describe('the Dockerfile as the image builder reads it', () => {
  const stages = parseDockerfile(fs.readFileSync(path.join(ROOT, 'Dockerfile'), 'utf8'));

  it('has a build and a runtime stage with the runtime settings the image takes', () => {
    expect(stages.map((s) => s.name)).toEqual(['build', 'runtime']);
    const runtime = stages[1]!;
    expect(runtime.workdir).toBe('/app');
    expect(runtime.user).toMatch(/^[1-9][0-9]*:[0-9]+$/);
    expect(runtime.env.NODE_ENV).toBe('production');
    expect(runtime.entrypoint).toEqual(['node', '--optimize-for-size', '/app/bin/hotstandby.js']);
    expect(runtime.env.MALLOC_ARENA_MAX).toBe('2');
    expect(runtime.labels['org.opencontainers.image.title']).toBe('hotstandby-operator');
  });

  it('lists the context files that make up the content key', () => {
    const sources = contextSources(stages);
    for (const s of ['package.json', 'package-lock.json', 'src', 'bin', 'crds']) expect(sources).toContain(s);
  });

  it('refuses an instruction it would not re-enact', () => {
    expect(() => parseDockerfile('FROM x AS a\nVOLUME /data\n')).toThrow(/VOLUME is not re-enacted/);
  });
});

describe('content keys', () => {
  it('change with a file content, mode or name, and not otherwise', () => {
    const dir = path.join(work, 'tree');
    fs.mkdirSync(path.join(dir, 'sub'), { recursive: true });
    fs.writeFileSync(path.join(dir, 'sub', 'a.txt'), 'one');
    const first = treeHash(dir);
    expect(treeHash(dir)).toBe(first);
    fs.writeFileSync(path.join(dir, 'sub', 'a.txt'), 'two');
    const second = treeHash(dir);
    expect(second).not.toBe(first);
    fs.chmodSync(path.join(dir, 'sub', 'a.txt'), 0o755);
    expect(treeHash(dir)).not.toBe(second);
    fs.renameSync(path.join(dir, 'sub', 'a.txt'), path.join(dir, 'sub', 'b.txt'));
    expect(treeHash(dir)).not.toBe(second);
  });
});

describe("the Dragonfly stand-in's entrypoint", () => {
  it("passes the flags redis-server knows, drops the others, and says it is not Dragonfly", () => {
    // A fake redis-server that prints the arguments it was given.
    const bin = path.join(work, 'bin');
    fs.mkdirSync(bin, { recursive: true });
    fs.writeFileSync(path.join(bin, 'redis-server'), '#!/bin/sh\nfor a in "$@"; do printf "[%s]" "$a"; done\n', { mode: 0o755 });
    const script = path.join(ROOT, 'tools/images/dragonfly-standin.sh');
    const out = execFileSync('sh', [script, '--port=6380', '--logtostderr', '--requirepass', "it's secret", '--proactor_threads=2', '--dir', '/data'], {
      env: { PATH: `${bin}:/usr/bin:/bin` },
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    expect(out).toBe("[--protected-mode][no][--dir][/data][--port][6380][--requirepass][it's secret][--dir][/data]");
    const err = execFileSync('sh', ['-c', `"$0" --proactor_threads=2 2>&1 >/dev/null`, script], { env: { PATH: `${bin}:/usr/bin:/bin` }, encoding: 'utf8' });
    expect(err).toContain("Debian's redis-server is standing in for Dragonfly");
    expect(err).toContain('--proactor_threads');
  });
});

describe('iptables-save rules', () => {
  it('split into arguments with quoted comments kept whole', () => {
    expect(splitRule('-m comment --comment "kubernetes service portals" -j KUBE-SERVICES')).toEqual(['-m', 'comment', '--comment', 'kubernetes service portals', '-j', 'KUBE-SERVICES']);
  });
});
