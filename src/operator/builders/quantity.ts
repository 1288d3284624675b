// Kubernetes quantities and durations as numbers, for the few flags that
// need them (Dragonfly's --maxmemory and threads, the agent's snapshot interval).

const BINARY: Record<string, number> = { Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40, Pi: 2 ** 50, Ei: 2 ** 60 };
const DECIMAL: Record<string, number> = { m: 1e-3, '': 1, k: 1e3, M: 1e6, G: 1e9, T: 1e12, P: 1e15, E: 1e18 };

/** A quantity (`512Mi`, `2G`, `1.5`, `250m`, or a number) as a plain number; throws naming `field` when it is not one. */
export function parseQuantity(value: string | number, field: string): number {
  if (typeof value === 'number') return value;
  const m = /^([0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E)?$/.exec(value.trim());
  if (!m) throw new Error(`${field}: ${JSON.stringify(value)} is not a Kubernetes quantity such as 512Mi, 2Gi or 500m`);
  const unit = m[2] ?? '';
  return Number(m[1]) * (BINARY[unit] ?? DECIMAL[unit]!);
}

/** A duration as the CRD allows it (`30s`, `5m`, `1h30m`, `1500ms`) in whole seconds, rounded up. */
export function durationSeconds(value: string, field: string): number {
  if (!/^([0-9]+(ms|s|m|h))+$/.test(value)) throw new Error(`${field}: ${JSON.stringify(value)} is not a duration such as 30s, 5m or 1h`);
  let ms = 0;
  for (const [, n, unit] of value.matchAll(/([0-9]+)(ms|s|m|h)/g)) {
    ms += Number(n) * { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[unit as 'ms' | 's' | 'm' | 'h'];
  }
  return Math.ceil(ms / 1000);
}
