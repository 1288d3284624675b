// The project's Dockerfile as data: its stages with their COPY and RUN steps
// and the runtime settings (WORKDIR, ENV, USER, ENTRYPOINT, CMD, LABEL). There
// is no Docker engine here, so the image builder (images.ts) and the layout
// test (test/integration/image-layout.test.ts) both re-enact these steps, which
// keeps the Dockerfile and the dev cluster's image in step.
import fs from 'node:fs';
import path from 'node:path';

export type DockerStep =
  | { kind: 'COPY'; from?: string; sources: string[]; dest: string }
  | { kind: 'RUN'; command: string };

export interface DockerStage {
  name: string;
  steps: DockerStep[];
  workdir?: string;
  env: Record<string, string>;
  labels: Record<string, string>;
  user?: string;
  entrypoint?: string[];
  cmd?: string[];
}

/** Parses the subset of Dockerfile syntax the project uses; anything else is an error naming the line. */
export function parseDockerfile(text: string): DockerStage[] {
  const lines = text
    .replace(/\\\n/g, ' ')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'));
  const stages: DockerStage[] = [];
  for (const line of lines) {
    const [instr = '', ...rest] = line.split(/\s+/);
    const args = rest.join(' ');
    if (instr === 'ARG') continue; // only the base image's name, which the re-enactment does not use
    if (instr === 'FROM') {
      const name = /\bAS\s+(\S+)/i.exec(args)?.[1] ?? `stage${stages.length}`;
      stages.push({ name, steps: [], env: {}, labels: {} });
      continue;
    }
    const stage = stages.at(-1);
    if (!stage) throw new Error(`Dockerfile: ${instr} before the first FROM`);
    switch (instr) {
      case 'COPY': {
        const from = rest.find((p) => p.startsWith('--from='))?.slice('--from='.length);
        const parts = rest.filter((p) => !p.startsWith('--'));
        stage.steps.push({ kind: 'COPY', ...(from ? { from } : {}), sources: parts.slice(0, -1), dest: parts.at(-1)! });
        break;
      }
      case 'RUN':
        stage.steps.push({ kind: 'RUN', command: args });
        break;
      case 'WORKDIR':
        stage.workdir = args;
        break;
      case 'USER':
        stage.user = args;
        break;
      case 'ENV':
        Object.assign(stage.env, keyValues(args));
        break;
      case 'LABEL':
        Object.assign(stage.labels, keyValues(args));
        break;
      case 'ENTRYPOINT':
        stage.entrypoint = JSON.parse(args) as string[];
        break;
      case 'CMD':
        stage.cmd = JSON.parse(args) as string[];
        break;
      default:
        throw new Error(`Dockerfile: ${instr} is not re-enacted by src/devcluster/dockerfile.ts; teach it or avoid it (line: ${line})`);
    }
  }
  return stages;
}

/** `a=1 b="two words"` as an object. */
function keyValues(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const m of text.matchAll(/([A-Za-z0-9_.-]+)=("((?:[^"\\]|\\.)*)"|\S+)/g)) {
    out[m[1]!] = m[3] !== undefined ? m[3].replace(/\\(.)/g, '$1') : m[2]!;
  }
  return out;
}

/** The context files a stage's COPY steps read (not those copied from other stages). */
export function contextSources(stages: DockerStage[]): string[] {
  return stages.flatMap((s) => s.steps.flatMap((step) => (step.kind === 'COPY' && !step.from ? step.sources : [])));
}

/**
 * Re-enacts the stages in `workRoot/<stage>` (each stage's WORKDIR becomes its
 * directory): COPY from the context or an earlier stage, RUN with `sh -c` via
 * `runStep`. Returns the stages with their directories.
 */
export async function reenact(
  stages: DockerStage[],
  opts: { context: string; workRoot: string; runStep: (stage: DockerStage, command: string, cwd: string) => Promise<void> },
): Promise<Array<DockerStage & { dir: string }>> {
  const done: Array<DockerStage & { dir: string }> = [];
  for (const stage of stages) {
    const dir = path.join(opts.workRoot, stage.name);
    fs.mkdirSync(dir, { recursive: true });
    const workdir = stage.workdir ?? '/';
    for (const step of stage.steps) {
      if (step.kind === 'RUN') {
        await opts.runStep(stage, step.command, dir);
        continue;
      }
      const fromStage = step.from ? done.find((s) => s.name === step.from) : undefined;
      if (step.from && !fromStage) throw new Error(`Dockerfile: COPY --from=${step.from} names no earlier stage`);
      const isDirDest = step.dest.endsWith('/') || step.sources.length > 1;
      for (const source of step.sources) {
        const src = fromStage
          ? path.join(fromStage.dir, path.relative(fromStage.workdir ?? '/', path.resolve(fromStage.workdir ?? '/', source)))
          : path.join(opts.context, source);
        if (!fs.existsSync(src)) throw new Error(`Dockerfile: COPY source ${source} does not exist (${src})`);
        const target = path.join(dir, path.relative(workdir, path.resolve(workdir, step.dest)));
        const finalTarget = isDirDest ? path.join(target, path.basename(src)) : target;
        fs.mkdirSync(path.dirname(finalTarget), { recursive: true });
        fs.cpSync(src, finalTarget, { recursive: true });
      }
    }
    done.push({ ...stage, dir });
  }
  return done;
}
