import { describe, expect, it } from 'vitest';
import {
  checkAppendBody,
  checkAppliedBody,
  checkDeleteBody,
  checkDeletesQuery,
  checkMetaDeleteQuery,
  checkMetaKey,
  checkMetaPutBody,
  checkNoQuery,
  checkRoleQuery,
  checkSnapshotQuery,
  checkStreamQuery,
  type Checked,
} from '../../src/agent/localapi/validate.ts';

function refused(c: Checked<unknown>): string {
  if (c.ok) throw new Error(`expected a refusal, got ${JSON.stringify(c.value)}`);
  expect(c.message.length).toBeGreaterThan(0);
  return c.field;
}
const q = (s: string): URLSearchParams => new URLSearchParams(s);
const entry = (over: Record<string, unknown> = {}): Record<string, unknown> => ({ op: 'put', key: 'k', payload: 'v', ...over });

describe('checkAppendBody', () => {
  it('accepts 1 and 1000 entries and copies only the known fields', () => {
    expect(checkAppendBody({ entries: [entry()] })).toEqual({ ok: true, value: [{ op: 'put', key: 'k', payload: 'v' }] });
    const many = checkAppendBody({ entries: Array.from({ length: 1000 }, () => entry()) });
    expect(many.ok && many.value.length).toBe(1000);
    expect(checkAppendBody({ entries: [entry({ key: '', op: 'x'.repeat(64), payload: '' })] }).ok).toBe(true);
    expect(checkAppendBody({ entries: [entry({ key: 'k'.repeat(1024) })] }).ok).toBe(true);
  });
  it.each([
    ['not an object', [], 'body'],
    ['null', null, 'body'],
    ['entries missing', {}, 'entries'],
    ['entries not an array', { entries: 'x' }, 'entries'],
    ['entries empty', { entries: [] }, 'entries'],
    ['too many entries', { entries: Array.from({ length: 1001 }, () => entry()) }, 'entries'],
    ['unknown top-level field', { entries: [entry()], epoch: 3 }, 'epoch'],
    ['entry not an object', { entries: [entry(), 5] }, 'entries[1]'],
    ['op empty', { entries: [entry({ op: '' })] }, 'entries[0].op'],
    ['op too long', { entries: [entry({ op: 'x'.repeat(65) })] }, 'entries[0].op'],
    ['op not a string', { entries: [entry({ op: 7 })] }, 'entries[0].op'],
    ['op missing', { entries: [{ key: 'k', payload: '' }] }, 'entries[0].op'],
    ['key too long', { entries: [entry({ key: 'k'.repeat(1025) })] }, 'entries[0].key'],
    ['key not a string', { entries: [entry({ key: null })] }, 'entries[0].key'],
    ['payload not a string', { entries: [entry(), entry(), entry({ payload: { a: 1 } })] }, 'entries[2].payload'],
    ['payload missing', { entries: [{ op: 'put', key: 'k' }] }, 'entries[0].payload'],
    ['unknown entry field', { entries: [entry({ seq: 4 })] }, 'entries[0].seq'],
  ])('refuses %s', (_name, body, field) => {
    expect(refused(checkAppendBody(body))).toBe(field);
  });
});

describe('checkAppliedBody', () => {
  it('accepts 0 and positive integers', () => {
    expect(checkAppliedBody({ seq: 0 })).toEqual({ ok: true, value: 0 });
    expect(checkAppliedBody({ seq: 250 })).toEqual({ ok: true, value: 250 });
  });
  it.each([[{ seq: -1 }], [{ seq: 1.5 }], [{ seq: '3' }], [{}], [{ seq: 2 ** 53 }], [{ seq: Number.NaN }]])('refuses %j', (body) => {
    expect(refused(checkAppliedBody(body))).toBe('seq');
  });
  it('refuses a non-object and unknown fields', () => {
    expect(refused(checkAppliedBody(3))).toBe('body');
    expect(refused(checkAppliedBody({ seq: 1, sequence: 2 }))).toBe('sequence');
  });
});

describe('checkRoleQuery', () => {
  it('defaults timeoutMs to 30000 and after to none', () => {
    expect(checkRoleQuery(q(''))).toEqual({ ok: true, value: { after: undefined, timeoutMs: 30000 } });
    expect(checkRoleQuery(q('after=4&timeoutMs=0'))).toEqual({ ok: true, value: { after: 4, timeoutMs: 0 } });
    expect(checkRoleQuery(q('timeoutMs=60000'))).toEqual({ ok: true, value: { after: undefined, timeoutMs: 60000 } });
  });
  it.each([
    ['timeoutMs=60001', 'timeoutMs'],
    ['timeoutMs=-1', 'timeoutMs'],
    ['timeoutMs=1.5', 'timeoutMs'],
    ['timeoutMs=', 'timeoutMs'],
    ['timeoutMs=1e3', 'timeoutMs'],
    ['after=x', 'after'],
    ['after=-2', 'after'],
    ['after=1&after=2', 'after'],
    ['wait=1', 'wait'],
  ])('refuses %s', (query, field) => {
    expect(refused(checkRoleQuery(q(query)))).toBe(field);
  });
});

describe('checkStreamQuery', () => {
  it('needs from >= 1', () => {
    expect(checkStreamQuery(q('from=1'))).toEqual({ ok: true, value: { from: 1 } });
    expect(refused(checkStreamQuery(q('')))).toBe('from');
    expect(refused(checkStreamQuery(q('from=0')))).toBe('from');
    expect(refused(checkStreamQuery(q('from=-5')))).toBe('from');
    expect(refused(checkStreamQuery(q('from=2.5')))).toBe('from');
    expect(refused(checkStreamQuery(q('from=99999999999999999999')))).toBe('from');
  });
});

describe('checkSnapshotQuery', () => {
  it('needs seq >= 0', () => {
    expect(checkSnapshotQuery(q('seq=0'))).toEqual({ ok: true, value: { seq: 0 } });
    expect(refused(checkSnapshotQuery(q('')))).toBe('seq');
    expect(refused(checkSnapshotQuery(q('seq=-1')))).toBe('seq');
    expect(refused(checkSnapshotQuery(q('seq=abc')))).toBe('seq');
  });
});

describe('checkDeleteBody', () => {
  it('accepts a key with or without payload', () => {
    expect(checkDeleteBody({ key: 'obj-1' })).toEqual({ ok: true, value: { key: 'obj-1', payload: '' } });
    expect(checkDeleteBody({ key: 'obj-1', payload: 'p' })).toEqual({ ok: true, value: { key: 'obj-1', payload: 'p' } });
  });
  it.each([
    [{}, 'key'],
    [{ key: '' }, 'key'],
    [{ key: 'k'.repeat(1025) }, 'key'],
    [{ key: 5 }, 'key'],
    [{ key: 'k', payload: 5 }, 'payload'],
    [{ key: 'k', other: 1 }, 'other'],
    ['k', 'body'],
  ])('refuses %j', (body, field) => {
    expect(refused(checkDeleteBody(body))).toBe(field);
  });
});

describe('checkDeletesQuery', () => {
  it('fromRevision is optional and >= 1', () => {
    expect(checkDeletesQuery(q(''))).toEqual({ ok: true, value: { fromRevision: undefined } });
    expect(checkDeletesQuery(q('fromRevision=12'))).toEqual({ ok: true, value: { fromRevision: 12 } });
    expect(refused(checkDeletesQuery(q('fromRevision=0')))).toBe('fromRevision');
    expect(refused(checkDeletesQuery(q('fromRevision=x')))).toBe('fromRevision');
    expect(refused(checkDeletesQuery(q('fromRevision=-3')))).toBe('fromRevision');
  });
});

describe('checkMetaKey', () => {
  it('accepts the allowed charset, decoded', () => {
    expect(checkMetaKey('a/b.c_d~e-F9')).toEqual({ ok: true, value: 'a/b.c_d~e-F9' });
    expect(checkMetaKey('a%2Fb')).toEqual({ ok: true, value: 'a/b' });
    expect(checkMetaKey('k'.repeat(512)).ok).toBe(true);
  });
  it.each([[''], ['k'.repeat(513)], ['a%20b'], ['a:b'], ['%E0%A4%A'], ['caf%C3%A9'], ['a?b']])('refuses %s', (raw) => {
    expect(refused(checkMetaKey(raw))).toBe('key');
  });
});

describe('checkMetaPutBody', () => {
  it('accepts value with optional expectedModRevision (0 = absent)', () => {
    expect(checkMetaPutBody({ value: 'v' })).toEqual({ ok: true, value: { value: 'v', expectedModRevision: undefined } });
    expect(checkMetaPutBody({ value: '', expectedModRevision: 0 })).toEqual({ ok: true, value: { value: '', expectedModRevision: 0 } });
  });
  it.each([
    [{}, 'value'],
    [{ value: 3 }, 'value'],
    [{ value: 'v', expectedModRevision: -1 }, 'expectedModRevision'],
    [{ value: 'v', expectedModRevision: '17' }, 'expectedModRevision'],
    [{ value: 'v', expectedModRevision: 1.5 }, 'expectedModRevision'],
    [{ value: 'v', expectedModRevision: null }, 'expectedModRevision'],
    [{ value: 'v', ttl: 3 }, 'ttl'],
    [[], 'body'],
  ])('refuses %j', (body, field) => {
    expect(refused(checkMetaPutBody(body))).toBe(field);
  });
});

describe('checkMetaDeleteQuery and checkNoQuery', () => {
  it('expectedModRevision is optional and >= 0', () => {
    expect(checkMetaDeleteQuery(q(''))).toEqual({ ok: true, value: { expectedModRevision: undefined } });
    expect(checkMetaDeleteQuery(q('expectedModRevision=0'))).toEqual({ ok: true, value: { expectedModRevision: 0 } });
    expect(refused(checkMetaDeleteQuery(q('expectedModRevision=-1')))).toBe('expectedModRevision');
    expect(refused(checkMetaDeleteQuery(q('expectedModRevision=a')))).toBe('expectedModRevision');
  });
  it('endpoints without parameters refuse any', () => {
    expect(checkNoQuery(q('')).ok).toBe(true);
    expect(refused(checkNoQuery(q('x=1')))).toBe('x');
  });
});
