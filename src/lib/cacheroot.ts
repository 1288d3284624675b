// Where hotstandby keeps what it builds and runs locally (the test control plane,
// Dragonfly built from source, dev-cluster state): one root for all of them.
import os from 'node:os';
import path from 'node:path';

/** $HOTSTANDBY_CACHE, else ~/.cache/hotstandby. */
export function hotstandbyCacheRoot(): string {
  return process.env.HOTSTANDBY_CACHE ?? path.join(os.homedir(), '.cache', 'hotstandby');
}
