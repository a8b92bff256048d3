/**
 * @file The live progress line: a line redrawn in place on a terminal, a plain line every `every` updates
 * otherwise (logs, CI), so long work always shows where it is and when it will end.
 */

/** Formats seconds as "1h02m", "3m05s" or "12s". */
export function duration(sec: number): string {
  if (!Number.isFinite(sec) || sec < 0) return "?";
  const s = Math.round(sec);
  if (s >= 3600) return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
  if (s >= 60) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, "0")}s`;
  return `${s}s`;
}

/** Writes progress lines to stdout. */
export class Progress {
  readonly tty: boolean;
  #n = 0;
  #last = "";
  constructor(readonly every = 10, tty?: boolean) {
    this.tty = tty ?? Deno.stdout.isTerminal();
  }

  /** Shows `line`; `force` prints it even between plain-line intervals. */
  update(line: string, force = false): void {
    this.#n++;
    if (this.tty) {
      Deno.stdout.writeSync(new TextEncoder().encode(`\r\x1b[2K${line}`));
      this.#last = line;
    } else if (force || this.#n % this.every === 0) console.log(line);
  }

  /** Prints a message on its own line (keeping the progress line intact on terminals). */
  log(msg: string): void {
    if (this.tty && this.#last) Deno.stdout.writeSync(new TextEncoder().encode(`\r\x1b[2K`));
    console.log(msg);
    if (this.tty && this.#last) Deno.stdout.writeSync(new TextEncoder().encode(this.#last));
  }

  /** Ends the live line. */
  done(): void {
    if (this.tty && this.#last) Deno.stdout.writeSync(new TextEncoder().encode("\n"));
    this.#last = "";
  }
}
