// What a process's RSS is made of, from /proc/<pid>/smaps: the node binary's
// code, its read-only data (the JavaScript source and code cache of Node's
// built-in modules, the V8 snapshot, ICU data) and its writable data, other
// mapped files (libc, libstdc++, ...), and anonymous memory (the V8 heap,
// malloc, thread stacks). The first four are file pages: one copy in the page
// cache serves every process that maps the same file, and the kernel can drop
// the clean ones under memory pressure. Anonymous memory is what the process
// alone adds (RssAnon). bench/footprint.ts prints this beside RSS so that the
// gap to bare Node can be seen, not inferred (docs/footprint.md).
import fs from 'node:fs';

export interface RssByMapping {
  nodeCodeMb: number;
  nodeReadOnlyMb: number;
  nodeWritableMb: number;
  otherFilesMb: number;
  anonymousMb: number;
}

/** Sums the Rss of every mapping in `smaps` text by kind; `binary` is the path of the process's executable. */
export function rssByMapping(smaps: string, binary: string): RssByMapping {
  const kb = { nodeCode: 0, nodeReadOnly: 0, nodeWritable: 0, otherFiles: 0, anonymous: 0 };
  let kind: keyof typeof kb = 'anonymous';
  for (const line of smaps.split('\n')) {
    // A mapping's header: "start-end perms offset dev inode [path]"; its fields follow, one a line.
    const header = /^[0-9a-f]+-[0-9a-f]+ ([rwxps-]{4}) [0-9a-f]+ \S+ \d+\s*(.*)$/.exec(line);
    if (header) {
      const perms = header[1]!;
      const path = header[2]!.trim();
      // No path, or a pseudo-path such as [heap], [stack], [anon:...], [vdso]: not a file.
      if (path === '' || path.startsWith('[')) kind = 'anonymous';
      else if (path === binary) kind = perms[2] === 'x' ? 'nodeCode' : perms[1] === 'w' ? 'nodeWritable' : 'nodeReadOnly';
      else kind = 'otherFiles';
      continue;
    }
    const rss = /^Rss:\s+(\d+) kB$/.exec(line);
    if (rss) kb[kind] += Number(rss[1]);
  }
  const mb = (x: number): number => x / 1024;
  return {
    nodeCodeMb: mb(kb.nodeCode),
    nodeReadOnlyMb: mb(kb.nodeReadOnly),
    nodeWritableMb: mb(kb.nodeWritable),
    otherFilesMb: mb(kb.otherFiles),
    anonymousMb: mb(kb.anonymous),
  };
}

/** rssByMapping of a live process; undefined when /proc cannot be read (not Linux, or the process is gone). */
export function readRssByMapping(pid: number): RssByMapping | undefined {
  try {
    return rssByMapping(fs.readFileSync(`/proc/${pid}/smaps`, 'utf8'), fs.readlinkSync(`/proc/${pid}/exe`));
  } catch {
    return undefined;
  }
}
