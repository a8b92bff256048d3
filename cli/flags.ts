/**
 * @file Command-line flags in the usual `--name value` form (`--flag` alone for booleans), declared once as
 * a table so that `--help` lists every flag with its default and unknown or malformed flags are clear errors.
 */

/** One flag: its type, default and help text. */
export interface FlagSpec {
  type: "string" | "number" | "boolean";
  default?: string | number | boolean;
  help: string;
}

/** Parsed values by flag name (camelCase keys are not used: names stay as written, e.g. "max-steps"). */
export type Flags = Record<string, string | number | boolean | undefined>;

/** Thrown for bad command lines; the CLI prints the message and the usage, not a stack trace. */
export class UsageError extends Error {}

/** Parses `args` against `specs`; `--help` returns `{help: true}`. Unknown flags and bad numbers throw UsageError. */
export function parseFlags(args: string[], specs: Record<string, FlagSpec>): Flags {
  const out: Flags = {};
  for (const [k, s] of Object.entries(specs)) out[k] = s.default;
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === "--help" || a === "-h") return { ...out, help: true };
    if (!a.startsWith("--")) throw new UsageError(`unexpected argument "${a}" (flags are --name value)`);
    let name = a.slice(2), value: string | undefined;
    const eq = name.indexOf("=");
    if (eq >= 0) [name, value] = [name.slice(0, eq), name.slice(eq + 1)];
    const s = specs[name];
    if (!s) {
      throw new UsageError(
        `unknown flag --${name}; known: ${Object.keys(specs).map((k) => `--${k}`).join(" ")}`,
      );
    }
    if (s.type === "boolean") {
      out[name] = value === undefined ? true : !/^(0|false|no)$/i.test(value);
      continue;
    }
    if (value === undefined) {
      value = args[++i];
      if (value === undefined || (value.startsWith("--") && s.type !== "number")) {
        throw new UsageError(`--${name} needs a value`);
      }
    }
    if (s.type === "number") {
      const n = Number(value);
      if (value.trim() === "" || !Number.isFinite(n)) {
        throw new UsageError(`--${name}: "${value}" is not a number`);
      }
      out[name] = n;
    } else out[name] = value;
  }
  return out;
}

/** The `--help` text: one line per flag with its default. */
export function usage(title: string, specs: Record<string, FlagSpec>): string {
  const rows = Object.entries(specs).map(([k, s]) => {
    const flag = s.type === "boolean" ? `--${k}` : `--${k} ${s.type === "number" ? "N" : "VALUE"}`;
    const def = s.default === undefined ? "" : ` (default: ${s.default})`;
    return `  ${flag.padEnd(24)} ${s.help}${def}`;
  });
  return `${title}\n\nflags:\n${rows.join("\n")}`;
}
