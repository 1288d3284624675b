// Keepalives for one etcd lease, one round at a time.
//
// Each round is one request and one answer (etcd's JSON gateway,
// src/lib/etcd-http) on a kept-alive HTTP connection: no stream or call set-up
// per round, which is what made the gRPC keepalive cost most of an idle
// agent's CPU (issue 10).
//
// Correctness of the caller's local deadline rests on one rule: an answer
// belongs to the request it answers. With one HTTP request per round that
// holds by construction, and a round that did not answer in time is
// destroyed with its connection, so its late answer cannot arrive at all.
// Only one round is ever in flight.
import type { EtcdHttpClient } from '../lib/etcd-http/client.ts';

export class LeaseKeepAlive {
  readonly leaseId: string;
  private readonly etcd: EtcdHttpClient;
  private inFlight = false;
  private closed = false;

  constructor(etcd: EtcdHttpClient, leaseId: string) {
    this.etcd = etcd;
    this.leaseId = leaseId;
  }

  /**
   * One keepalive round trip, answered within timeoutMs. Resolves with the
   * lease's remaining TTL in seconds as the server reports it (0: the lease
   * no longer exists); rejects on a timeout or a failure. One call at a time.
   */
  async renew(timeoutMs: number): Promise<number> {
    if (this.closed) throw new Error(`the keepalive of lease ${this.leaseId} is closed`);
    if (this.inFlight) throw new Error(`a keepalive of lease ${this.leaseId} is already in flight`);
    this.inFlight = true;
    try {
      const res = await this.etcd.leaseKeepAlive(this.leaseId, timeoutMs);
      if (this.closed) throw new Error(`the keepalive of lease ${this.leaseId} was closed`);
      return Number(res.TTL);
    } finally {
      this.inFlight = false;
    }
  }

  /** No more rounds (the lease itself is untouched); a round in flight rejects when it ends. */
  close(): void {
    this.closed = true;
  }
}
