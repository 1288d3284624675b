// Splits a newline-delimited text stream (NDJSON: the agent's log stream,
// etcd's watch stream) into lines, holding at most one unfinished line.
// node:readline does the splitting too, but it loads readline's terminal code
// for a job of a few lines, and it buffers a line of any length before its
// caller can refuse it: a peer that never sends a newline would grow the
// buffer without end. Here a line longer than the bound fails as soon as the
// bound is passed.

/** A line (or the unfinished rest of one) is longer than the reader accepts. */
export class LineTooLongError extends Error {
  readonly maxChars: number;
  constructor(length: number, maxChars: number) {
    super(`a line of ${length} characters exceeds the ${maxChars} limit`);
    this.name = 'LineTooLongError';
    this.maxChars = maxChars;
  }
}

export class LineSplitter {
  private pending = '';
  private readonly maxChars: number;

  /** maxChars bounds one line (without its newline); Infinity for no bound. */
  constructor(maxChars: number) {
    this.maxChars = maxChars;
  }

  /**
   * The lines the chunk completes, without their '\n' (nor a '\r' before it).
   * Empty lines are returned as ''. Throws LineTooLongError when a line, or
   * the unfinished rest, is longer than the bound.
   */
  push(chunk: string): string[] {
    if (!chunk.includes('\n')) {
      // The middle of a long line: append without rescanning what is held.
      this.pending += chunk;
      if (this.pending.length > this.maxChars) throw new LineTooLongError(this.pending.length, this.maxChars);
      return [];
    }
    const text = this.pending + chunk;
    const lines: string[] = [];
    let start = 0;
    let nl: number;
    while ((nl = text.indexOf('\n', start)) >= 0) {
      const end = nl > start && text.charCodeAt(nl - 1) === 13 ? nl - 1 : nl;
      if (end - start > this.maxChars) throw new LineTooLongError(end - start, this.maxChars);
      lines.push(text.slice(start, end));
      start = nl + 1;
    }
    this.pending = text.slice(start);
    if (this.pending.length > this.maxChars) throw new LineTooLongError(this.pending.length, this.maxChars);
    return lines;
  }

  /** The unfinished rest (a stream that ended without a final newline). */
  rest(): string {
    return this.pending;
  }
}

/** The lines of a stream of text chunks (e.g. a response after setEncoding('utf8')), then its unfinished rest if any. */
export async function* readLines(source: AsyncIterable<string>, maxChars: number): AsyncGenerator<string> {
  const splitter = new LineSplitter(maxChars);
  for await (const chunk of source) yield* splitter.push(chunk);
  const rest = splitter.rest();
  if (rest) yield rest;
}
