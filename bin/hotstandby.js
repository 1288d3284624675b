#!/usr/bin/env node
// Entry point of the `hotstandby` command. Runs the compiled CLI from dist/
// when it has been built (the image), else the TypeScript sources directly
// (Node 24 strips types natively), so a checkout works without a build step.
import { fileURLToPath, pathToFileURL } from 'node:url';
import path from 'node:path';

const major = Number(process.versions.node.split('.')[0]);
if (major < 24) {
  console.error(
    `hotstandby needs Node.js 24 or newer; this is ${process.version}. ` +
      'In a checkout, run it through npm (npx hotstandby ...), which uses the pinned Node from node_modules.',
  );
  process.exit(1);
}

// Not an ES import of node:fs: that reads every export of it, and its
// `promises` loads node:readline and more that no command needs (docs/footprint.md).
const { existsSync } = process.getBuiltinModule('node:fs');
const root = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
const built = path.join(root, 'dist', 'cli', 'main.js');
const source = path.join(root, 'src', 'cli', 'main.ts');
const entry = existsSync(built) && !process.env.HOTSTANDBY_FROM_SOURCE ? built : source;
const { main } = await import(pathToFileURL(entry).href);
process.exitCode = await main(process.argv.slice(2));
