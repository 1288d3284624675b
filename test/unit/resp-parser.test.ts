// The RESP2 parser on byte streams cut at every possible place: whatever the
// network's read sizes, the same replies come out, in order, and nothing is
// taken out before it is whole.
import { describe, expect, it } from 'vitest';
import { encodeCommand, ProtocolError, ReplyError, RespParser, type RespValue } from '../../src/lib/resp/parser.ts';

const wire = Buffer.from(
  [
    '+OK\r\n',
    '-NOSCRIPT No matching script\r\n',
    ':42\r\n',
    ':-7\r\n',
    '$5\r\nhé\r\n\r\n', // 5 bytes: h, é (2 bytes), CR, LF inside the value
    '$-1\r\n',
    '$0\r\n\r\n',
    '*-1\r\n',
    '*0\r\n',
    '*2\r\n*2\r\n$3\r\n1-0\r\n*2\r\n$1\r\ne\r\n$1\r\n5\r\n$-1\r\n',
  ].join(''),
  'utf8',
);

function expected(): RespValue[] {
  return ['OK', new ReplyError('NOSCRIPT No matching script'), 42, -7, 'hé\r\n', null, '', null, [], [['1-0', ['e', '5']], null]];
}

function feedInPieces(bytes: Buffer, cuts: number[], asBuffers = false): RespValue[] {
  const parser = new RespParser();
  const out: RespValue[] = [];
  let from = 0;
  for (const cut of [...cuts, bytes.length]) {
    out.push(...parser.feed(bytes.subarray(from, cut), () => asBuffers));
    from = cut;
  }
  return out;
}

describe('RespParser', () => {
  it('parses every reply type in one read', () => {
    const got = feedInPieces(wire, []);
    expect(got).toEqual(expected());
    expect((got[1] as ReplyError).name).toBe('ReplyError');
  });

  it('gives the same replies whatever single place the stream is cut', () => {
    for (let cut = 1; cut < wire.length; cut++) expect(feedInPieces(wire, [cut]), `cut at ${cut}`).toEqual(expected());
  });

  it('gives the same replies when every byte arrives on its own', () => {
    expect(feedInPieces(wire, Array.from({ length: wire.length - 1 }, (_, i) => i + 1))).toEqual(expected());
  });

  it('hands out nothing until a reply is whole, then all of it', () => {
    const parser = new RespParser();
    const value = Buffer.alloc(100_000, 7);
    const bytes = Buffer.concat([Buffer.from(`$${value.length}\r\n`), value, Buffer.from('\r\n:1\r\n')]);
    const replies: RespValue[] = [];
    for (let at = 0; at < bytes.length; at += 4096) {
      const piece = parser.feed(bytes.subarray(at, Math.min(bytes.length, at + 4096)), () => true);
      if (at + 4096 < value.length) expect(piece).toEqual([]);
      replies.push(...piece);
    }
    expect(replies).toHaveLength(2);
    expect(Buffer.compare(replies[0] as Buffer, value)).toBe(0);
    expect(replies[1]).toBe(1);
  });

  it('keeps bulk strings as Buffers for the replies that ask, byte for byte', () => {
    const binary = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
    const bytes = Buffer.concat([Buffer.from('$256\r\n'), binary, Buffer.from('\r\n$256\r\n'), binary, Buffer.from('\r\n')]);
    const [asBuffer, asText] = new RespParser().feed(bytes, (i) => i === 0);
    expect(Buffer.isBuffer(asBuffer)).toBe(true);
    expect(Buffer.compare(asBuffer as Buffer, binary)).toBe(0);
    expect(typeof asText).toBe('string');
  });

  it('refuses bytes that are not RESP2, naming the byte', () => {
    expect(() => new RespParser().feed(Buffer.from('%1\r\n'), () => false)).toThrow(ProtocolError);
    expect(() => new RespParser().feed(Buffer.from('%1\r\n'), () => false)).toThrow(/0x25/);
    expect(() => new RespParser().feed(Buffer.from(':x1\r\n'), () => false)).toThrow(/expected an integer/);
  });

  it('forgets a partial reply on reset (a new connection starts clean)', () => {
    const parser = new RespParser();
    expect(parser.feed(Buffer.from('$10\r\nabc'), () => false)).toEqual([]);
    parser.reset();
    expect(parser.feed(Buffer.from('+PONG\r\n'), () => false)).toEqual(['PONG']);
  });
});

describe('encodeCommand', () => {
  it('writes an array of bulk strings, lengths in bytes, Buffers as they are', () => {
    const payload = Buffer.from([0, 13, 10, 255]);
    expect(encodeCommand(['SET', 'ключ', payload, 12]).toString('latin1')).toBe(
      `*4\r\n$3\r\nSET\r\n$8\r\n${Buffer.from('ключ').toString('latin1')}\r\n$4\r\n\u0000\r\n\u00ff\r\n$2\r\n12\r\n`,
    );
  });

  it('round-trips through the parser as the server would echo it', () => {
    const args = ['XADD', 'k', '1-0', 'p', 'a\r\nb'];
    const [parsed] = new RespParser().feed(encodeCommand(args), () => false);
    expect(parsed).toEqual(args);
  });
});
