/**
 * What the CLI (src/cli/main.ts) turns into one line and an exit code.
 *
 * A mistake the user can fix (bad flag, missing file, wrong checkpoint). The CLI prints its
 * message as one line and exits with code 2; anything else is a bug and keeps its stack.
 */
export class UserError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UserError';
  }
}

/** The loss became NaN/inf with no recovery to turn to: a clean message, not a stack trace (exit 1). */
export class TrainingDiverged extends Error {}

/** The recovery ladder ran out (src/control/ladder.ts): the message says where to go back to (exit 3). */
export class RecoveryExhausted extends Error {}
