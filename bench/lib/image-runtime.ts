// What the project image sets for every process it runs (the Dockerfile's
// runtime stage: its ENV lines and the node flags of its ENTRYPOINT), so a
// benchmark measures a process as it runs in a pod, not as a bare `node`.
import fs from 'node:fs';
import path from 'node:path';

export interface ImageRuntime {
  /** Flags between `node` and the entry script, e.g. --optimize-for-size. */
  nodeFlags: string[];
  env: Record<string, string>;
}

/** The runtime stage of `<root>/Dockerfile`; empty when there is none. */
export function imageRuntime(root: string): ImageRuntime {
  const dockerfile = path.join(root, 'Dockerfile');
  if (!fs.existsSync(dockerfile)) return { nodeFlags: [], env: {} };
  const text = fs.readFileSync(dockerfile, 'utf8');
  const runtime = text.slice(text.lastIndexOf('\nFROM '));
  const env: Record<string, string> = {};
  for (const [, pairs] of runtime.matchAll(/^ENV\s+(.+)$/gm)) {
    for (const pair of pairs!.trim().split(/\s+/)) {
      const eq = pair.indexOf('=');
      if (eq > 0) env[pair.slice(0, eq)] = pair.slice(eq + 1);
    }
  }
  const m = /^ENTRYPOINT\s+(\[.*\])\s*$/m.exec(runtime);
  const argv = m ? (JSON.parse(m[1]!) as string[]) : [];
  return { nodeFlags: argv.slice(1, argv.findIndex((a) => a.endsWith('hotstandby.js'))), env };
}
