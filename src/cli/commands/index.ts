// Every `hotstandby` subcommand, in the order `hotstandby --help` lists them.
// Add a command by adding its file and one line here.
import type { Command } from '../command.ts';
import { agentCommand } from './agent.ts';
import { demoCommand } from './demo.ts';
import { devClusterCommand } from './dev-cluster.ts';
import { kvmasterCommand } from './kvmaster.ts';
import { operatorCommand } from './operator.ts';
import { statusCommand } from './status.ts';
import { switchoverCommand } from './switchover.ts';

export const commands: Command[] = [demoCommand, agentCommand, kvmasterCommand, operatorCommand, statusCommand, switchoverCommand, devClusterCommand];
