// MasterSession: when the master counts as alive, gone, back, or a new
// instance. Pure logic with real (short) timers.
import { describe, expect, it } from 'vitest';
import { MasterSession, SupersededError } from '../../src/agent/master-session.ts';
import { sleep } from '../../src/lib/time.ts';

function session(timeoutMs = 100): { s: MasterSession; events: string[] } {
  const events: string[] = [];
  const s = new MasterSession({
    timeoutMs,
    onGone: () => events.push('gone'),
    onNewInstance: (instance, previous) => events.push(`new ${instance ?? '-'} after ${previous ?? '-'}`),
    onBack: () => events.push('back'),
  });
  return { s, events };
}

describe('MasterSession', () => {
  it('is not alive before the master ever called; the first call is a new instance coming back', () => {
    const { s, events } = session();
    expect(s.alive()).toBe(false);
    s.begin('a')();
    expect(s.alive()).toBe(true);
    expect(s.instance).toBe('a');
    expect(events).toEqual(['new a after -', 'back']);
    s.close();
  });

  it('an open request keeps the master alive however long it lasts', async () => {
    const { s, events } = session(50);
    const end = s.begin('a');
    await sleep(200);
    expect(s.alive()).toBe(true);
    expect(s.silentForMs()).toBe(0);
    end();
    expect(events).not.toContain('gone');
    s.close();
  });

  it('declared gone once, timeoutMs after its last request ended; back on its next request', async () => {
    const { s, events } = session(80);
    s.begin('a')();
    expect(s.alive()).toBe(true);
    await sleep(250);
    expect(s.alive()).toBe(false);
    expect(events.filter((e) => e === 'gone')).toHaveLength(1);
    s.begin('a')();
    expect(s.alive()).toBe(true);
    // Same instance: not new, only back.
    expect(events).toEqual(['new a after -', 'back', 'gone', 'back']);
    s.close();
  });

  it('a request that begins before the timeout passes keeps it alive (a re-issued long-poll)', async () => {
    const { s, events } = session(300);
    for (let i = 0; i < 6; i++) {
      const end = s.begin('a');
      await sleep(30);
      end();
      await sleep(5);
    }
    await sleep(20);
    expect(events).not.toContain('gone');
    s.close();
  });

  it('a dropped role long-poll with nothing else open means gone after a fifth of the timeout', async () => {
    const { s, events } = session(1000);
    s.begin('a')(true);
    await sleep(400);
    expect(s.alive()).toBe(false);
    expect(events).toContain('gone');
    s.close();
  });

  it('a dropped poll while another request is open counts for nothing; a request begun after it clears it', async () => {
    const { s, events } = session(1000);
    const stream = s.begin('a');
    s.begin('a')(true);
    await sleep(400);
    expect(s.alive()).toBe(true);
    stream();
    // The stream ended normally after the drop: the drop still marks the master as leaving.
    await sleep(400);
    expect(events).toContain('gone');
    const { s: s2, events: events2 } = session(1000);
    s2.begin('a')(true);
    s2.begin('a')(); // the master re-opened a poll (its connection was lost, not its process)
    await sleep(400);
    expect(s2.alive()).toBe(true);
    expect(events2).not.toContain('gone');
    s.close();
    s2.close();
  });

  it('a new instance name is reported; requests from the replaced one are refused', () => {
    const { s, events } = session();
    const endA = s.begin('a');
    s.begin('b')();
    expect(events).toEqual(['new a after -', 'back', 'new b after a']);
    expect(() => s.begin('a')).toThrow(SupersededError);
    endA();
    // A master without the header is taken for the current one while it is alive.
    s.begin(undefined)();
    expect(s.instance).toBe('b');
    expect(events).toHaveLength(3);
    s.close();
  });

  it('a master that sends no name counts as new when it comes back after being gone', async () => {
    const { s, events } = session(50);
    s.begin(undefined)();
    s.begin(undefined)();
    await sleep(150);
    s.begin(undefined)();
    expect(events).toEqual(['new - after -', 'back', 'gone', 'new - after -', 'back']);
    s.close();
  });

  it('close() stops the timer: no callback afterwards', async () => {
    const { s, events } = session(30);
    s.begin('a')();
    s.close();
    await sleep(100);
    expect(events).not.toContain('gone');
  });
});
