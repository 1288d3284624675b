// The OpenAPI document and the router must name the same endpoints: a route
// nobody documented, or a documented one nobody serves, fails here.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { parse } from 'yaml';
import { ROUTE_TABLE } from '../../src/agent/localapi/server.ts';

const doc = parse(readFileSync(new URL('../../docs/local-api.openapi.yaml', import.meta.url), 'utf8')) as {
  openapi: string;
  paths: Record<string, Record<string, unknown>>;
  components: { schemas: Record<string, unknown>; responses: Record<string, unknown> };
};
const METHODS = ['get', 'put', 'post', 'delete', 'patch', 'head', 'options'];

describe('docs/local-api.openapi.yaml', () => {
  it('is OpenAPI 3.1', () => {
    expect(doc.openapi).toMatch(/^3\.1\./);
  });

  it('documents exactly the routes the server serves', () => {
    const documented = Object.entries(doc.paths)
      .flatMap(([path, item]) => Object.keys(item).filter((k) => METHODS.includes(k)).map((m) => `${m.toUpperCase()} ${path}`))
      .sort();
    const served = ROUTE_TABLE.map((r) => `${r.method} ${r.path}`).sort();
    expect(served.length).toBeGreaterThan(0);
    expect(documented).toEqual(served);
  });

  it('resolves every $ref', () => {
    const refs = [...JSON.stringify(doc).matchAll(/"\$ref":"#\/components\/(schemas|responses)\/([^"]+)"/g)];
    expect(refs.length).toBeGreaterThan(10);
    for (const [, kind, name] of refs) {
      expect(doc.components[kind as 'schemas' | 'responses'], `${kind}/${name}`).toHaveProperty([name!]);
    }
  });

  it('lists every error code the server can answer', () => {
    const codes = (doc.components.schemas.Error as { properties: { error: { properties: { code: { enum: string[] } } } } }).properties.error
      .properties.code.enum;
    expect(codes.sort()).toEqual(
      ['bad_request', 'conflict', 'fenced', 'internal', 'method_not_allowed', 'not_found', 'not_leader', 'superseded', 'sync_timeout', 'too_large', 'unavailable'].sort(),
    );
  });
});
