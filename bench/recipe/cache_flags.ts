/** @file Flag parsing the recipe scripts share: required flags, and usage errors that exit 2 naming the script. */
import { type Flags, type FlagSpec, parseFlags, UsageError } from "../../cli/flags.ts";

/** Parses a recipe script's flags with `required` present; a usage error exits 2 naming the script. */
export function recipeFlags(script: string, specs: Record<string, FlagSpec>, required: string[]): Flags {
  try {
    const f = parseFlags(Deno.args, specs);
    const missing = required.filter((k) => f[k] === undefined);
    if (missing.length) {
      const names = missing.map((k) => `--${k}`).join(", ");
      throw new UsageError(`${names} ${missing.length > 1 ? "are" : "is"} required`);
    }
    return f;
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    console.error(`bench/recipe/${script}: ${e.message}`);
    Deno.exit(2);
  }
}

/** {@link recipeFlags} for the scripts that read a preprocessing cache (crop_levels.ts, true_masks.ts). */
export function cacheFlags(script: string, specs: Record<string, FlagSpec>): Flags {
  return recipeFlags(script, specs, ["cache"]);
}
