// Long-running commands (agent, kvmaster, operator, dev-cluster serve) run
// until SIGTERM or SIGINT, then shut down cleanly.

/** Resolves with the first SIGTERM or SIGINT; both listeners are removed then. */
export function untilStopSignal(): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    const onSignal = (signal: NodeJS.Signals): void => {
      process.off('SIGTERM', onSignal);
      process.off('SIGINT', onSignal);
      resolve(signal);
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
  });
}
