// `hotstandby`: one command for every role. The subcommand chooses what runs,
// so one image serves the operator, the agent and the tools.
import { commands } from './commands/index.ts';
import { UsageError, wantsHelp } from './command.ts';

function usage(): string {
  const width = Math.max(...commands.map((c) => c.name.length), 8);
  const lines = commands.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`);
  return [
    'Usage: hotstandby <command> [options]',
    '',
    'Commands:',
    ...lines,
    '',
    'Run `hotstandby <command> --help` for the options of one command.',
  ].join('\n');
}

export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === 'help' || ((name === '--help' || name === '-h') && rest.length === 0)) {
    console.log(usage());
    return 0;
  }
  const entry = commands.find((c) => c.name === name);
  if (!entry) {
    console.error(`hotstandby: unknown command ${JSON.stringify(name)}\n\n${usage()}`);
    return 2;
  }
  // Only this command's module: every other command's code stays unloaded.
  const command = await entry.load();
  if (wantsHelp(rest)) {
    console.log(command.help);
    return 0;
  }
  try {
    return await command.run(rest);
  } catch (err) {
    if (err instanceof UsageError) {
      console.error(`hotstandby ${name}: ${err.message}\nRun \`hotstandby ${name} --help\` for usage.`);
      return 2;
    }
    throw err;
  }
}
