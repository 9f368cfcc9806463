// Errors the CLI reports as one clear line. Anything else escaping a command is a bug in the tool.

/** A problem with the user's input or environment (bad file, unreachable registry, wrong password): exit code 1. */
export class UserError extends Error {
  /** Extra lines printed after the message (for example one line per policy problem). */
  readonly details: string[];
  constructor(message: string, details: string[] = []) {
    super(message);
    this.name = "UserError";
    this.details = details;
  }
}

/** Returns the message of an unknown thrown value on one line, following the `cause` that fetch() uses for network errors. */
export function describeError(err: unknown): string {
  return rawDescription(err).replace(/\s+/g, " ").trim();
}

function rawDescription(err: unknown): string {
  if (err instanceof Error) {
    const cause = (err as { cause?: unknown }).cause;
    if (cause instanceof Error && !err.message.includes(cause.message)) {
      const code = (cause as { code?: string }).code;
      return `${err.message}: ${code && !cause.message.includes(code) ? `${code} ` : ""}${cause.message}`;
    }
    return err.message;
  }
  return String(err);
}
