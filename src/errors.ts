/**
 * A mistake the user can fix (bad flag, missing file, wrong checkpoint). The CLI prints its
 * message as one line and exits with code 2; anything else is a bug and keeps its stack.
 */
export class UserError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UserError';
  }
}
