// `hotstandby kvmaster`: the reference master, a key-value service that works
// only through its agent's local API. SIGTERM/SIGINT stop it cleanly.
import type { Command } from '../command.ts';
import { UsageError, parseFlags } from '../command.ts';
import { untilStopSignal } from '../signals.ts';

const help = `Usage: hotstandby kvmaster --listen HOST:PORT [--agent-api HOST:PORT|unix:/path] [--log-level LEVEL]

Runs the reference master next to an agent: a key-value service whose leader
appends every write to the agent's log before acknowledging it, and whose
standbys apply the log. See docs/kvmaster.md.

Options:
  --listen HOST:PORT       where clients reach this master (port 0 = any free port)
  --agent-api ADDR         the agent's local API, as given to its --api-listen
                           (default $HOTSTANDBY_LOCAL_API, which the operator sets in
                           master pods, e.g. http://127.0.0.1:7070)
  --log-level LEVEL        fatal|error|warn|info|debug|trace|silent (default info)

Client API:
  PUT /kv/{key}  body = value   → 200 {key, seq, epoch} once the write is in the log
  DELETE /kv/{key}              → 200 {key, seq, epoch}
  GET /kv/{key}[?stale=1]       → 200 {key, value, appliedSeq}; a standby answers 409 with
                                  the leader's address (header X-Leader) unless stale=1;
                                  a member still catching up to lead answers 503 catching_up
  GET /status, GET /healthz

Example:
  hotstandby kvmaster --listen 127.0.0.1:8080 --agent-api 127.0.0.1:7070`;

/** HOTSTANDBY_LOCAL_API as --agent-api takes it: `http://127.0.0.1:7070` becomes `127.0.0.1:7070`. */
export function localApiFromEnv(value: string | undefined): string | undefined {
  const v = value?.trim();
  if (!v) return undefined;
  return v.replace(/^http:\/\//, '').replace(/\/+$/, '');
}

export const kvmasterCommand: Command = {
  name: 'kvmaster',
  help,
  async run(argv) {
    const values = parseFlags(argv, { listen: { type: 'string' }, 'agent-api': { type: 'string' }, 'log-level': { type: 'string' } });
    if (!values.listen) throw new UsageError('--listen HOST:PORT is required (where clients reach this master)');
    const agentApi = values['agent-api'] ?? localApiFromEnv(process.env.HOTSTANDBY_LOCAL_API);
    if (!agentApi) throw new UsageError('--agent-api is required (the address the agent was given as --api-listen), or set HOTSTANDBY_LOCAL_API');
    const { startKvMaster } = await import('../../kvmaster/master.ts');
    const { createLogger } = await import('../../lib/log.ts');
    const log = createLogger({ component: 'kvmaster', ...(values['log-level'] ? { level: values['log-level'] } : {}) });
    let master;
    try {
      master = await startKvMaster({ listen: values.listen, agentApi, log });
    } catch (err) {
      throw new UsageError((err as Error).message);
    }
    await untilStopSignal();
    await master.close();
    return 0;
  },
};
