// Preload (node --import) that records every module the process loads, ESM
// and CommonJS alike, and writes their URLs, one a line, to the file named by
// $HOTSTANDBY_MODULE_TRACE when the process exits, then Node's own modules. Tests use it to prove a
// command does not load a library it does not use.
/* global process */
// Built-ins through process.getBuiltinModule, not ES imports: an ES import of
// node:fs loads node:readline & co. (eslint.config.js), and the trace would
// then list modules the traced process itself never loads.
const { writeFileSync } = process.getBuiltinModule('node:fs');
const { registerHooks } = process.getBuiltinModule('node:module');

const out = process.env.HOTSTANDBY_MODULE_TRACE;
if (out) {
  const seen = new Set();
  registerHooks({
    load(url, context, nextLoad) {
      seen.add(url);
      return nextLoad(url, context);
    },
  });
  process.on('exit', () => {
    // Node's own modules too (not seen by the hooks), as node-internal:<name>.
    for (const m of process.moduleLoadList) if (m.startsWith('NativeModule ')) seen.add(`node-internal:${m.slice('NativeModule '.length)}`);
    writeFileSync(out, [...seen].join('\n') + '\n');
  });
}
