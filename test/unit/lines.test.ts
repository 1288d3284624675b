// The NDJSON line splitter (src/lib/lines.ts) that the reference master's log
// stream reader and the etcd watch stream use: lines split across chunks in
// any way, CRLF, empty lines, and a bound that fails as soon as a line passes
// it rather than after the whole line was held. The streams themselves are
// tested end to end in kvmaster.test.ts and etcd-http.test.ts.
import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { LineSplitter, LineTooLongError, readLines } from '../../src/lib/lines.ts';

describe('LineSplitter', () => {
  it('returns the lines a chunk completes and holds the unfinished rest', () => {
    const s = new LineSplitter(100);
    expect(s.push('{"a":1}\n{"b"')).toEqual(['{"a":1}']);
    expect(s.rest()).toBe('{"b"');
    expect(s.push(':2}\n\n{"c":3}\r\n')).toEqual(['{"b":2}', '', '{"c":3}']);
    expect(s.rest()).toBe('');
  });

  it('gives the same lines however the text is cut into chunks', () => {
    const text = 'first line\nsecond\r\n\nfourth with ünïcödé\nlast without newline';
    const whole = new LineSplitter(1000);
    const expected = [...whole.push(text), whole.rest()];
    expect(expected).toEqual(['first line', 'second', '', 'fourth with ünïcödé', 'last without newline']);
    for (let size = 1; size <= text.length; size++) {
      const s = new LineSplitter(1000);
      const got: string[] = [];
      for (let i = 0; i < text.length; i += size) got.push(...s.push(text.slice(i, i + size)));
      got.push(s.rest());
      expect(got, `chunks of ${size}`).toEqual(expected);
    }
  });

  it('accepts a line of exactly the bound', () => {
    const s = new LineSplitter(5);
    expect(s.push('12345\n')).toEqual(['12345']);
    expect(s.push('123')).toEqual([]);
    expect(s.push('45\r\n')).toEqual(['12345']); // the \r is not part of the line
  });

  it('fails a complete line longer than the bound, naming its length and the bound', () => {
    const s = new LineSplitter(5);
    expect(() => s.push('123456\n')).toThrow(new LineTooLongError(6, 5));
    expect(() => new LineSplitter(5).push('123456\n')).toThrow('a line of 6 characters exceeds the 5 limit');
  });

  it('fails an unfinished line as soon as it passes the bound, without waiting for its newline', () => {
    const s = new LineSplitter(10);
    expect(s.push('12345')).toEqual([]);
    expect(s.push('67890')).toEqual([]);
    expect(() => s.push('x')).toThrow(LineTooLongError);
    const t = new LineSplitter(10);
    expect(() => t.push('ok\n12345678901')).toThrow('a line of 11 characters exceeds the 10 limit');
  });
});

describe('readLines', () => {
  it('reads the lines of a stream of chunks, then the rest', async () => {
    const source = Readable.from(['a\nb', 'c\n', 'd']);
    const got: string[] = [];
    for await (const line of readLines(source, 10)) got.push(line);
    expect(got).toEqual(['a', 'bc', 'd']);
  });

  it('rejects with LineTooLongError and destroys the source when a line passes the bound', async () => {
    let served = 0;
    const source = new Readable({
      read() {
        served++;
        this.push('x'.repeat(1000)); // never a newline
      },
    });
    source.setEncoding('utf8');
    const reading = (async () => {
      for await (const _ of readLines(source, 10_000)) void _;
    })();
    await expect(reading).rejects.toThrow(LineTooLongError);
    expect(served).toBeLessThan(20); // stopped near the bound, not after an unbounded buffer
    expect(source.destroyed).toBe(true);
  });
});
