/** @file The `--cache` flag the cache-reading recipe scripts share (crop_levels.ts, true_masks.ts). */
import { type Flags, type FlagSpec, parseFlags, UsageError } from "../../cli/flags.ts";

/** Parses a recipe script's flags, `--cache` required; a usage error exits 2 naming the script. */
export function cacheFlags(script: string, specs: Record<string, FlagSpec>): Flags {
  try {
    const f = parseFlags(Deno.args, specs);
    if (f.cache === undefined) throw new UsageError("--cache is required");
    return f;
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    console.error(`bench/recipe/${script}: ${e.message}`);
    Deno.exit(2);
  }
}
