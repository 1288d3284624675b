// The API's single source: the committed CRD files are exactly what
// scripts/gen-crd.ts makes from src/api, and the schema builder says what it means.
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { renderCrdYaml, CRD_FILE_NAME, CRD_OUTPUT_DIRS } from '../../src/api/render.ts';
import { arr, defaultsOf, int, obj, str } from '../../src/api/schema.ts';
import { AGENT_DEFAULT_RESOURCES } from '../../src/api/defaults.ts';
import { hotStandbyClusterSpec } from '../../src/api/v1alpha1.ts';

const ROOT = path.resolve(import.meta.dirname, '../..');

describe('CRD generation', () => {
  for (const dir of CRD_OUTPUT_DIRS) {
    it(`${dir}/${CRD_FILE_NAME} is what src/api generates (run npm run gen:crd after changing src/api)`, () => {
      expect(fs.readFileSync(path.join(ROOT, dir, CRD_FILE_NAME), 'utf8')).toBe(renderCrdYaml());
    });
  }

  it('every CEL rule carries a message that names a spec field', () => {
    const messages: string[] = [];
    const walk = (s: { 'x-kubernetes-validations'?: Array<{ message: string }>; properties?: Record<string, unknown>; items?: unknown }): void => {
      for (const v of s['x-kubernetes-validations'] ?? []) messages.push(v.message);
      for (const p of Object.values(s.properties ?? {})) walk(p as typeof s);
      if (s.items) walk(s.items as typeof s);
    };
    walk(hotStandbyClusterSpec.json);
    expect(messages.length).toBeGreaterThanOrEqual(7);
    for (const m of messages) expect(m).toMatch(/^spec\.[a-zA-Z]+/);
  });
});

describe('docs/crd.md', () => {
  it("states the agent's default resources as src/api/defaults.ts sets them", () => {
    const { requests, limits } = AGENT_DEFAULT_RESOURCES;
    const row = `| \`agent.resources\` | requests cpu ${requests.cpu}, memory ${requests.memory}; limits memory ${limits.memory} |`;
    expect(fs.readFileSync(path.join(ROOT, 'docs/crd.md'), 'utf8')).toContain(row);
  });
});

describe('schema builder', () => {
  it('marks required fields and keeps only what was said', () => {
    const s = obj({ a: str({ minLength: 1 }), b: int() }, { required: ['a'] });
    expect(s.json).toEqual({ type: 'object', properties: { a: { type: 'string', minLength: 1 }, b: { type: 'integer' } }, required: ['a'] });
  });

  it('a defaulted object carries its fields defaults, so the API server applies them when the section is omitted', () => {
    const s = obj({ ttl: int({ default: 5 }), name: str(), mode: str({ enum: ['x', 'y'] as const, default: 'x' }) }, { defaulted: true });
    expect(s.json.default).toEqual({ ttl: 5, mode: 'x' });
    expect(defaultsOf({ a: { type: 'integer' } })).toEqual({});
  });

  it('arrays wrap their item schema', () => {
    expect(arr(str(), { maxItems: 3 }).json).toEqual({ type: 'array', items: { type: 'string' }, maxItems: 3 });
  });
});
