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
  /**
   * The sequence just before the stream's first entry (head - length, read
   * together): the log covers only what follows it. Undefined when unknown.
   */
  logStartSeq?: number;
}

export function snapshotWanted(input: SnapshotPolicyInput): { reason: string; minSeq: number } | null {
  const sinceLast = input.headSeq - input.lastSnapshotSeq;
  if (sinceLast <= 0) return null; // nothing new to capture
  // Entries between the newest snapshot and the log's start are gone (the
  // stream server restarted empty and the epoch was raised past them, or it
  // trimmed past the snapshot): a standby behind them can resync only from a
  // newer snapshot, so one is wanted now, whatever the other triggers say.
  if (input.logStartSeq !== undefined && input.logStartSeq > input.lastSnapshotSeq) {
    return { reason: `the log starts after seq ${input.logStartSeq} but the newest snapshot is at ${input.lastSnapshotSeq}`, minSeq: input.headSeq };
  }
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
