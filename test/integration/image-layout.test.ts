// There is no Docker engine here, so this test re-enacts the Dockerfile: it
// follows its stages, COPY and RUN lines in temporary directories, then runs
// the CLI in the runtime stage with production dependencies only.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

const ROOT = path.resolve(import.meta.dirname, '../..');
const NODE24 = path.join(ROOT, 'node_modules', '.bin', 'node');

interface Stage {
  name: string;
  dir: string;
  steps: Array<{ kind: 'COPY'; from?: string; sources: string[]; dest: string } | { kind: 'RUN'; command: string }>;
  user?: string;
  entrypoint?: string[];
}

/** The stages of the Dockerfile, with line continuations joined. */
function parseDockerfile(text: string, workRoot: string): Stage[] {
  const lines = text.replace(/\\\n/g, ' ').split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));
  const stages: Stage[] = [];
  for (const line of lines) {
    const [instr, ...rest] = line.split(/\s+/);
    const args = rest.join(' ');
    const stage = stages.at(-1);
    if (instr === 'FROM') {
      const name = /\bAS\s+(\S+)/i.exec(args)?.[1] ?? `stage${stages.length}`;
      stages.push({ name, dir: path.join(workRoot, name), steps: [] });
    } else if (instr === 'COPY' && stage) {
      const parts = rest.filter((p) => !p.startsWith('--from='));
      const from = rest.find((p) => p.startsWith('--from='))?.slice('--from='.length);
      stage.steps.push({ kind: 'COPY', ...(from ? { from } : {}), sources: parts.slice(0, -1), dest: parts.at(-1)! });
    } else if (instr === 'RUN' && stage) {
      stage.steps.push({ kind: 'RUN', command: args });
    } else if (instr === 'USER' && stage) {
      stage.user = args;
    } else if (instr === 'ENTRYPOINT' && stage) {
      stage.entrypoint = JSON.parse(args) as string[];
    }
  }
  return stages;
}

function copyInto(src: string, stageDir: string, dest: string, isDirDest: boolean): void {
  const target = path.resolve(stageDir, dest);
  const finalTarget = isDirDest ? path.join(target, path.basename(src)) : target;
  fs.mkdirSync(path.dirname(finalTarget), { recursive: true });
  fs.cpSync(src, fs.statSync(src).isDirectory() && !isDirDest ? target : finalTarget, { recursive: true });
}

describe('the Dockerfile, re-enacted', () => {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'hs-image-'));
  afterAll(() => fs.rmSync(work, { recursive: true, force: true }));

  it('builds dist/ and runs the CLI from it with production dependencies only, as a non-root user', () => {
    const stages = parseDockerfile(fs.readFileSync(path.join(ROOT, 'Dockerfile'), 'utf8'), work);
    expect(stages.map((s) => s.name)).toEqual(['build', 'runtime']);
    const env = { ...process.env, PATH: `${path.dirname(NODE24)}:${process.env.PATH ?? ''}`, NODE_ENV: '' };
    for (const stage of stages) {
      fs.mkdirSync(stage.dir, { recursive: true });
      for (const step of stage.steps) {
        if (step.kind === 'RUN') {
          execFileSync('sh', ['-c', step.command], { cwd: stage.dir, env: { ...env, ...(stage.name === 'runtime' ? { NODE_ENV: 'production' } : {}) }, stdio: 'pipe', timeout: 300_000 });
          continue;
        }
        const fromDir = step.from ? stages.find((s) => s.name === step.from)!.dir : ROOT;
        const isDirDest = step.dest.endsWith('/') || step.sources.length > 1;
        for (const source of step.sources) {
          const src = step.from ? path.join(fromDir, path.relative('/app', source)) : path.join(fromDir, source);
          expect(fs.existsSync(src), `COPY source ${source} exists`).toBe(true);
          copyInto(src, stage.dir, step.dest, isDirDest);
        }
      }
    }
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
