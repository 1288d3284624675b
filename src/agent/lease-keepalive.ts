// Keepalives for one etcd lease over one long-lived gRPC stream.
//
// A keepalive used to open a stream, send one request, read one answer and
// close it: every round paid for a new HTTP/2 stream, its metadata and call
// set-up, which was most of an idle agent's CPU (issue 10), and under an
// added network delay the extra set-up made a renewal late often enough that
// a 2 s lease sometimes moved. Here the stream stays open for the lease's
// life and each round is one message each way.
//
// Correctness of the caller's local deadline rests on one rule: an answer is
// attributed to the request that was sent last, so there is never more than
// one request in flight, and a stream whose answer did not come in time is
// thrown away (its late answer could otherwise be taken for the next
// request's, which was sent later, and stretch the deadline). etcd answers a
// stream's requests in order, one answer per request.
import { type Etcd3, type IDuplexStream, type ILeaseKeepAliveRequest, type ILeaseKeepAliveResponse } from 'etcd3';
import { TimeoutError, withTimeout } from '../lib/time.ts';

type KeepAliveStream = IDuplexStream<ILeaseKeepAliveRequest, ILeaseKeepAliveResponse>;

interface Pending {
  resolve(ttlSeconds: number): void;
  reject(err: Error): void;
  timer: NodeJS.Timeout;
}

export class LeaseKeepAlive {
  readonly leaseId: string;
  private readonly etcd: Etcd3;
  private stream: KeepAliveStream | undefined;
  private pending: Pending | undefined;
  private closed = false;

  constructor(etcd: Etcd3, leaseId: string) {
    this.etcd = etcd;
    this.leaseId = leaseId;
  }

  /**
   * One keepalive round trip, answered within timeoutMs. Resolves with the
   * lease's remaining TTL in seconds as the server reports it (0: the lease
   * no longer exists). On a timeout or a stream error it rejects and drops
   * the stream; the next call opens a new one. One call at a time.
   */
  async renew(timeoutMs: number): Promise<number> {
    if (this.closed) throw new Error(`the keepalive of lease ${this.leaseId} is closed`);
    if (this.pending) throw new Error(`a keepalive of lease ${this.leaseId} is already in flight`);
    const giveUpAt = performance.now() + timeoutMs;
    const stream = this.stream ?? (await this.open(timeoutMs));
    const leftMs = giveUpAt - performance.now();
    if (leftMs <= 0 || this.closed || this.stream !== stream) {
      this.drop(stream);
      throw new TimeoutError('etcd keepalive answer', timeoutMs);
    }
    return await new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => this.fail(stream, new TimeoutError('etcd keepalive answer', timeoutMs)), leftMs);
      this.pending = { resolve, reject, timer };
      stream.write({ ID: this.leaseId });
    });
  }

  /** Ends the stream (the lease itself is untouched); a round in flight rejects. */
  close(): void {
    this.closed = true;
    if (this.stream) this.fail(this.stream, new Error(`the keepalive of lease ${this.leaseId} was closed`));
  }

  private async open(timeoutMs: number): Promise<KeepAliveStream> {
    // No call deadline: the stream lives until close() or a failure. Opening
    // normally resolves at once; the timer bounds a client that cannot.
    const opening = this.etcd.leaseClient.leaseKeepAlive();
    let stream: KeepAliveStream;
    try {
      stream = await withTimeout(opening, timeoutMs, 'etcd keepalive stream');
    } catch (err) {
      // A stream that opens after we gave up must not stay open.
      opening.then((late) => this.discard(late)).catch(() => undefined);
      throw err;
    }
    if (this.closed) {
      this.discard(stream);
      throw new Error(`the keepalive of lease ${this.leaseId} was closed`);
    }
    this.stream = stream;
    stream.on('data', (res: ILeaseKeepAliveResponse) => {
      if (this.stream !== stream || !this.pending) return;
      const { resolve, timer: answerTimer } = this.pending;
      this.pending = undefined;
      clearTimeout(answerTimer);
      resolve(Number(res.TTL));
    });
    // Kept for the stream's whole life: an 'error' without a listener would crash the process.
    stream.on('error', (err: Error) => this.fail(stream, err));
    stream.on('end', () => this.fail(stream, new Error('etcd ended the keepalive stream')));
    return stream;
  }

  /** The stream failed (or a round timed out on it): drop it and reject the round in flight. */
  private fail(stream: KeepAliveStream, err: Error): void {
    if (this.stream !== stream) return;
    this.drop(stream);
    const pending = this.pending;
    this.pending = undefined;
    if (!pending) return;
    clearTimeout(pending.timer);
    pending.reject(err);
  }

  private drop(stream: KeepAliveStream): void {
    if (this.stream === stream) this.stream = undefined;
    this.discard(stream);
  }

  private discard(stream: KeepAliveStream): void {
    stream.on('error', () => undefined); // a late 'error' must not go unhandled
    stream.cancel();
  }
}
