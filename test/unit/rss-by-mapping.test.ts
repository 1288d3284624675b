// bench/footprint.ts splits each process's RSS by mapping (node binary code,
// its read-only and writable data, other files, anonymous memory) from
// /proc/<pid>/smaps. The split is pure parsing; checked on a fixed excerpt and
// on this test's own process.
import fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import { readRssByMapping, rssByMapping } from '../../bench/lib/rss-by-mapping.ts';

const NODE = '/usr/local/bin/node';
const SMAPS = `00400000-0074a000 r--p 00000000 08:01 1234                               ${NODE}
Size:               3368 kB
Rss:                1000 kB
Pss:                 500 kB
0074a000-03044000 r-xp 0034a000 08:01 1234                               ${NODE}
Size:              42984 kB
Rss:               20000 kB
03201000-06b51000 r--p 02e01000 08:01 1234                               ${NODE}
Rss:               11000 kB
06b52000-06b7c000 rw-p 06751000 08:01 1234                               ${NODE}
Rss:                 300 kB
06b7c000-06b96000 rw-p 00000000 00:00 0
Rss:                  80 kB
0a1b2000-0a5f0000 rw-p 00000000 00:00 0                                  [heap]
Rss:                2200 kB
7f0000000000-7f0000100000 rw-p 00000000 00:00 0                          [anon:v8]
Rss:                1024 kB
7f1000000000-7f1000190000 r-xp 00028000 08:01 99                         /usr/lib/x86_64-linux-gnu/libc.so.6
Rss:                1200 kB
7f2000000000-7f2000010000 r--p 00000000 08:01 77                         /usr/lib/x86_64-linux-gnu/libstdc++.so.6.0.30 (deleted)
Rss:                  64 kB
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0                          [stack]
Rss:                 132 kB
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]
Rss:                   0 kB
`;

describe('RSS by mapping', () => {
  it('puts each mapping of the node binary, other files and anonymous memory in its own sum', () => {
    const byKind = rssByMapping(SMAPS, NODE);
    expect(byKind.nodeCodeMb * 1024).toBe(20000);
    expect(byKind.nodeReadOnlyMb * 1024).toBe(1000 + 11000);
    expect(byKind.nodeWritableMb * 1024).toBe(300);
    expect(byKind.otherFilesMb * 1024).toBe(1200 + 64);
    // The binary's bss (no path), [heap], [anon:v8], [stack], [vsyscall].
    expect(byKind.anonymousMb * 1024).toBe(80 + 2200 + 1024 + 132);
  });

  it('a mapping of another binary is not the node binary', () => {
    const byKind = rssByMapping(SMAPS, '/usr/bin/node');
    expect(byKind.nodeCodeMb + byKind.nodeReadOnlyMb + byKind.nodeWritableMb).toBe(0);
    expect(byKind.otherFilesMb * 1024).toBe(1000 + 20000 + 11000 + 300 + 1200 + 64);
  });

  it('on a live process the sums add up to its RSS and the node binary code is resident', () => {
    const byKind = readRssByMapping(process.pid);
    expect(byKind).toBeDefined();
    const total = byKind!.nodeCodeMb + byKind!.nodeReadOnlyMb + byKind!.nodeWritableMb + byKind!.otherFilesMb + byKind!.anonymousMb;
    const vmRssMb = Number(/VmRSS:\s+(\d+) kB/.exec(fs.readFileSync('/proc/self/status', 'utf8'))![1]) / 1024;
    // smaps and status are read a moment apart and the process allocates in between: close, not equal.
    expect(Math.abs(total - vmRssMb)).toBeLessThan(Math.max(4, vmRssMb * 0.05));
    expect(byKind!.nodeCodeMb).toBeGreaterThan(5);
    expect(byKind!.anonymousMb).toBeGreaterThan(5);
  });

  it('a process that is gone gives undefined, not an exception', () => {
    expect(readRssByMapping(2 ** 22 + 12345)).toBeUndefined();
  });
});
