// A few gauges in the Prometheus text format, served on /metrics. Small on
// purpose: a dependency for four gauges would cost more than it saves.

export class Metrics {
  private readonly gauges = new Map<string, { help: string; values: Map<string, number> }>();

  define(name: string, help: string): void {
    if (!this.gauges.has(name)) this.gauges.set(name, { help, values: new Map() });
  }

  set(name: string, labels: Record<string, string>, value: number): void {
    const g = this.gauges.get(name);
    if (!g) throw new Error(`metric ${name} is not defined`);
    g.values.set(labelText(labels), value);
  }

  /** Forgets every series of `name` whose labels include these (a deleted cluster). */
  drop(labels: Record<string, string>): void {
    const text = Object.entries(labels).map(([k, v]) => `${k}="${escape(v)}"`);
    for (const g of this.gauges.values()) for (const key of [...g.values.keys()]) if (text.every((t) => key.includes(t))) g.values.delete(key);
  }

  render(): string {
    const lines: string[] = [];
    for (const [name, g] of this.gauges) {
      lines.push(`# HELP ${name} ${g.help}`, `# TYPE ${name} gauge`);
      for (const [labels, value] of g.values) lines.push(`${name}${labels} ${value}`);
    }
    return `${lines.join('\n')}\n`;
  }
}

function escape(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

function labelText(labels: Record<string, string>): string {
  const parts = Object.entries(labels).map(([k, v]) => `${k}="${escape(v)}"`);
  return parts.length ? `{${parts.join(',')}}` : '';
}
