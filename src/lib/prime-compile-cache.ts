// Primes Node's compile cache at image build (Dockerfile, run as the user the
// pods run as): it loads the modules an agent and a reference master load
// before they are ready, so V8 compiles them once and Node keeps the code in
// <app>/.compile-cache; bin/hotstandby.js reads it at every later start
// instead of compiling again (issue 10: agent start to ready; figures in
// docs/footprint.md). At run time the cache is only read: the root filesystem
// is read-only, and Node silently skips writing a cache it cannot write.
import fs from 'node:fs';
import module from 'node:module';
import path from 'node:path';

/** <app>/.compile-cache, beside bin/ and dist/; bin/hotstandby.js looks for the same directory. */
const dir = path.join(import.meta.dirname, '..', '..', '.compile-cache');
if (!fs.existsSync(dir)) {
  console.error(`prime-compile-cache: ${dir} does not exist; create it (writable by the user that runs this) first`);
  process.exit(2);
}
const enabled = module.enableCompileCache(dir);
if (enabled.status === module.constants.compileCacheStatus.FAILED) {
  console.error(`prime-compile-cache: Node cannot use ${dir}: ${enabled.message ?? 'unknown reason'}`);
  process.exit(1);
}
// What `hotstandby agent` and `hotstandby kvmaster` import before they are ready.
await import('../cli/main.ts');
await import('../cli/commands/agent.ts');
await import('../cli/commands/kvmaster.ts');
await import('../agent/agent.ts');
await import('../kvmaster/master.ts');
module.flushCompileCache();
console.log(`compile cache primed in ${enabled.directory ?? dir}`);
