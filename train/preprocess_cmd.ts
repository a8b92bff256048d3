/**
 * `deno task preprocess --data DIR [--cache DIR] [--workers N] [--hu]`: the seed's preprocessing of an
 * RSNA-layout folder into the cache (data/preprocess.ts), with a progress line; rerunning resumes.
 */
import { preprocessDataset } from "../data/preprocess.ts";
import { type Flags, parseFlags, usage, UsageError } from "../cli/flags.ts";

const FLAGS = {
  data: { type: "string", help: "RSNA-layout dataset (train_images/, segmentations/, train.csv)" },
  cache: { type: "string", help: "the cache folder (default: <data>/cache)" },
  workers: { type: "number", default: navigator.hardwareConcurrency ?? 2, help: "preprocessing Workers" },
  hu: { type: "boolean", default: false, help: "store Hounsfield units instead of the stored pixel values" },
} as const;

/** Runs the command line; returns the exit code (2 for a bad command line, 1 for a failed run). */
export async function main(args: string[]): Promise<number> {
  let f: Flags;
  try {
    f = parseFlags(args, FLAGS);
    if (f.help) {
      console.log(usage("deno task preprocess: an RSNA-layout dataset -> the preprocessing cache", FLAGS));
      return 0;
    }
    if (f.data === undefined) throw new UsageError("--data is required");
    const w = f.workers as number;
    if (!Number.isInteger(w) || w < 1) throw new UsageError(`--workers must be an integer >= 1, got ${w}`);
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    console.error(`preprocess: ${e.message}`);
    return 2;
  }
  const data = f.data as string, cache = (f.cache as string | undefined) ?? `${data}/cache`;
  try {
    const res = await preprocessDataset(data, cache, {
      workers: f.workers as number,
      units: f.hu ? "hu" : "stored",
      onProgress: (p) => {
        const eta = (p.seconds / p.done) * (p.total - p.done);
        const line = `preprocessing ${p.done}/${p.total} studies, ${p.seconds.toFixed(1)} s, ETA ${
          eta.toFixed(0)
        } s`;
        Deno.stdout.writeSync(new TextEncoder().encode(`\r${line}`));
      },
    });
    console.log(
      `\n${res.processed.length} studies preprocessed, ${res.skipped.length} already cached; cache: ${cache}`,
    );
    return 0;
  } catch (e) {
    console.error(`\npreprocess: ${(e as Error).message}`);
    return 1;
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
