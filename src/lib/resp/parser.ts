// Incremental parser for RESP2, the Redis protocol's replies as redis-server
// and Dragonfly send them to a client that never asked for RESP3 (HELLO 3).
//
// Bytes arrive in arbitrary pieces. The parser keeps what it has not yet used
// and, on each piece, takes out every whole reply it can. A reply that is not
// whole yet is parsed again from its start when more bytes come; when the
// missing part is a bulk string of known length, the parser waits until that
// many bytes are there, so a large value (a snapshot chunk) is not re-parsed
// for every network read.

/** A server error reply ("-ERR ...", "-NOSCRIPT ..."). `name` is what callers test. */
export class ReplyError extends Error {
  override name = 'ReplyError';
}

/** The server sent bytes that are not RESP2: the connection must be dropped. */
export class ProtocolError extends Error {
  override name = 'ProtocolError';
}

export type RespValue = string | number | Buffer | null | ReplyError | RespValue[];

const CR = 13;

/** A reply, or how many bytes (at least) the buffer must hold before trying again. */
type Attempt = { value: RespValue; end: number } | { need: number };

export class RespParser {
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  /** Bytes the buffered data must reach before a parse can succeed. */
  private needBytes = 0;

  /**
   * Adds a piece and returns every whole reply now complete, in order.
   * `asBuffers(i)` says whether the i-th reply of this call (0-based) keeps its
   * bulk strings as Buffers instead of decoding them as UTF-8.
   */
  feed(chunk: Buffer, asBuffers: (index: number) => boolean): RespValue[] {
    this.pending.push(chunk);
    this.pendingBytes += chunk.length;
    if (this.pendingBytes < this.needBytes) return [];
    let buf = this.pending.length === 1 ? this.pending[0]! : Buffer.concat(this.pending, this.pendingBytes);
    const out: RespValue[] = [];
    let offset = 0;
    while (offset < buf.length) {
      const attempt = parseValue(buf, offset, asBuffers(out.length));
      if ('need' in attempt) {
        this.needBytes = attempt.need - offset;
        break;
      }
      out.push(attempt.value);
      offset = attempt.end;
    }
    buf = offset === buf.length ? Buffer.alloc(0) : buf.subarray(offset);
    this.pending = buf.length ? [buf] : [];
    this.pendingBytes = buf.length;
    if (!buf.length) this.needBytes = 0;
    return out;
  }

  /** Forgets any partial reply (the connection it came from is gone). */
  reset(): void {
    this.pending = [];
    this.pendingBytes = 0;
    this.needBytes = 0;
  }
}

function lineEnd(buf: Buffer, from: number): number {
  const cr = buf.indexOf(CR, from);
  return cr < 0 || cr + 1 >= buf.length ? -1 : cr;
}

function parseInteger(buf: Buffer, from: number, to: number): number {
  const text = buf.toString('latin1', from, to);
  const n = Number(text);
  if (text === '' || !Number.isInteger(n)) throw new ProtocolError(`expected an integer in the reply, got ${JSON.stringify(text.slice(0, 40))}`);
  return n;
}

function parseValue(buf: Buffer, start: number, asBuffers: boolean): Attempt {
  if (start >= buf.length) return { need: start + 1 };
  const type = buf[start];
  const cr = lineEnd(buf, start + 1);
  if (cr < 0) return { need: buf.length + 1 };
  const afterLine = cr + 2;
  switch (type) {
    case 0x2b: // '+' simple string
      return { value: buf.toString('utf8', start + 1, cr), end: afterLine };
    case 0x2d: // '-' error
      return { value: new ReplyError(buf.toString('utf8', start + 1, cr)), end: afterLine };
    case 0x3a: // ':' integer
      return { value: parseInteger(buf, start + 1, cr), end: afterLine };
    case 0x24: {
      // '$' bulk string
      const length = parseInteger(buf, start + 1, cr);
      if (length < 0) return { value: null, end: afterLine };
      const end = afterLine + length + 2;
      if (buf.length < end) return { need: end };
      const body = buf.subarray(afterLine, afterLine + length);
      // A copy, so a kept value does not pin the whole network read in memory.
      return { value: asBuffers ? Buffer.from(body) : body.toString('utf8'), end };
    }
    case 0x2a: {
      // '*' array
      const count = parseInteger(buf, start + 1, cr);
      if (count < 0) return { value: null, end: afterLine };
      const items: RespValue[] = new Array<RespValue>(count);
      let at = afterLine;
      for (let i = 0; i < count; i++) {
        const item = parseValue(buf, at, asBuffers);
        if ('need' in item) return item;
        items[i] = item.value;
        at = item.end;
      }
      return { value: items, end: at };
    }
    default:
      throw new ProtocolError(`unexpected reply type byte 0x${(type ?? 0).toString(16)}; is this a Redis-protocol server speaking RESP2?`);
  }
}

/** The request, as RESP2 wants it: an array of bulk strings. */
export function encodeCommand(args: readonly (string | number | Buffer)[]): Buffer {
  const parts: Buffer[] = [];
  let head = `*${args.length}\r\n`;
  for (const arg of args) {
    if (Buffer.isBuffer(arg)) {
      head += `$${arg.length}\r\n`;
      parts.push(Buffer.from(head, 'utf8'), arg);
      head = '\r\n';
    } else {
      const text = String(arg);
      head += `$${Buffer.byteLength(text)}\r\n${text}\r\n`;
    }
  }
  parts.push(Buffer.from(head, 'utf8'));
  return parts.length === 1 ? parts[0]! : Buffer.concat(parts);
}
