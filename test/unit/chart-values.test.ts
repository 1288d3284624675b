// The chart's values, schema and README cannot drift apart: every value key is
// allowed by values.schema.json and documented in the chart README.
import fs from 'node:fs';
import path from 'node:path';
import { parse } from 'yaml';
import { describe, expect, it } from 'vitest';

const CHART = path.resolve(import.meta.dirname, '../../charts/hotstandby-operator');

/** Dotted paths of values.yaml, stopping at maps the schema leaves free (resources, contexts...). */
function keys(value: unknown, prefix = ''): string[] {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return [prefix];
  const entries = Object.entries(value as Record<string, unknown>);
  if (prefix && ['resources', 'podSecurityContext', 'securityContext'].includes(prefix)) return [prefix];
  if (entries.length === 0) return [prefix];
  return entries.flatMap(([k, v]) => keys(v, prefix ? `${prefix}.${k}` : k));
}

interface SchemaNode {
  properties?: Record<string, SchemaNode>;
}

describe('chart values', () => {
  const values = parse(fs.readFileSync(path.join(CHART, 'values.yaml'), 'utf8')) as Record<string, unknown>;
  const schema = JSON.parse(fs.readFileSync(path.join(CHART, 'values.schema.json'), 'utf8')) as SchemaNode;
  const readme = fs.readFileSync(path.join(CHART, 'README.md'), 'utf8');
  const all = keys(values);

  it('lists a reasonable set of values', () => {
    expect(all).toContain('image.repository');
    expect(all).toContain('watchNamespaces');
  });

  for (const key of keys(parse(fs.readFileSync(path.join(CHART, 'values.yaml'), 'utf8')))) {
    it(`${key} is in values.schema.json and in the chart README`, () => {
      let node: SchemaNode | undefined = schema;
      for (const part of key.split('.')) node = node?.properties?.[part];
      expect(node, `values.schema.json has no ${key}`).toBeDefined();
      expect(readme, `README.md does not document ${key}`).toContain(`\`${key}\``);
    });
  }
});
