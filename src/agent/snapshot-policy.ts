// When the leader's agent asks its master for a snapshot. Pure, so the rule
// can be read and tested on its own.

export interface SnapshotPolicyInput {
  headSeq: number;
  /** Sequence of the newest stored snapshot; 0 when there is none. */
  lastSnapshotSeq: number;
  /** ms timestamp of the newest stored snapshot (or of taking leadership when none). */
  lastSnapshotAt: number;
  now: number;
  everyEntries: number;
  /** 0 disables the time trigger. */
  intervalSeconds: number;
  /** Entries currently in the stream, and the stream's MAXLEN. */
  logLength: number;
  maxLength: number;
}

export function snapshotWanted(input: SnapshotPolicyInput): { reason: string; minSeq: number } | null {
  const sinceLast = input.headSeq - input.lastSnapshotSeq;
  if (sinceLast <= 0) return null; // nothing new to capture
  if (sinceLast >= input.everyEntries) {
    return { reason: `${sinceLast} entries since the last snapshot (every ${input.everyEntries})`, minSeq: input.headSeq };
  }
  // The stream trims at maxLength; a snapshot well before that keeps every
  // entry after the newest snapshot reachable for a standby that resyncs.
  if (input.logLength >= input.maxLength / 2) {
    return { reason: `log holds ${input.logLength} entries, half its maximum ${input.maxLength}`, minSeq: input.headSeq };
  }
  if (input.intervalSeconds > 0 && input.now - input.lastSnapshotAt >= input.intervalSeconds * 1000) {
    return { reason: `${input.intervalSeconds} s since the last snapshot`, minSeq: input.headSeq };
  }
  return null;
}
