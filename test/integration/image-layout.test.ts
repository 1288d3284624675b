// There is no Docker engine here, so this test re-enacts the Dockerfile: it
// follows its stages, COPY and RUN lines in temporary directories, then runs
// the CLI in the runtime stage with production dependencies only. The dev
// cluster's image builder (src/devcluster/images.ts) re-enacts it the same way.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parseDockerfile, reenact } from '../../src/devcluster/dockerfile.ts';

const ROOT = path.resolve(import.meta.dirname, '../..');
const NODE24 = path.join(ROOT, 'node_modules', '.bin', 'node');

describe('the Dockerfile, re-enacted', () => {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'hs-image-'));
  // Two node_modules trees: removing them takes long on a loaded machine.
  afterAll(() => fs.rmSync(work, { recursive: true, force: true }), 300_000);

  it('builds dist/ and runs the CLI from it with production dependencies only, as a non-root user', async () => {
    const parsed = parseDockerfile(fs.readFileSync(path.join(ROOT, 'Dockerfile'), 'utf8'));
    expect(parsed.map((s) => s.name)).toEqual(['build', 'runtime']);
    const env = { ...process.env, PATH: `${path.dirname(NODE24)}:${process.env.PATH ?? ''}`, NODE_ENV: '' };
    const stages = await reenact(parsed, {
      context: ROOT,
      workRoot: work,
      runStep: async (stage, command, cwd) => {
        execFileSync('sh', ['-c', command], { cwd, env: { ...env, ...stage.env }, stdio: 'pipe', timeout: 300_000 });
      },
    });
    const runtime = stages.at(-1)!;
    expect(runtime.user).toMatch(/^[1-9][0-9]*(:[0-9]+)?$/); // numeric and not root
    expect(runtime.entrypoint).toEqual(['node', '--optimize-for-size', '/app/bin/hotstandby.js']);
    const nodeFlags = runtime.entrypoint!.slice(1, -1);
    // Production dependencies only.
    for (const dev of ['typescript', 'vitest', 'eslint', 'node']) {
      expect(fs.existsSync(path.join(runtime.dir, 'node_modules', dev)), `${dev} must not be in the runtime image`).toBe(false);
    }
    for (const dep of ['etcd3', 'ioredis', 'pino', 'yaml', '@kubernetes/client-node']) {
      expect(fs.existsSync(path.join(runtime.dir, 'node_modules', dep)), `${dep} is needed at runtime`).toBe(true);
    }
    // No sources: the CLI must run from dist/.
    expect(fs.existsSync(path.join(runtime.dir, 'src'))).toBe(false);
    const bin = path.join(runtime.dir, 'bin', 'hotstandby.js');
    const help = execFileSync(NODE24, [...nodeFlags, bin, '--help'], { cwd: runtime.dir, encoding: 'utf8', env: { ...env, HOTSTANDBY_FROM_SOURCE: '' } });
    expect(help).toContain('agent');
    const agentHelp = execFileSync(NODE24, [...nodeFlags, bin, 'agent', '--help'], { cwd: runtime.dir, encoding: 'utf8' });
    expect(agentHelp).toContain('--cluster NS/NAME');
  }, 600_000);
});
