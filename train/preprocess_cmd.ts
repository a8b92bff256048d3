/**
 * `deno task preprocess --data DIR --cache DIR [--workers N] [--hu]`: the seed's preprocessing of an
 * RSNA-layout folder into the cache (data/preprocess.ts), with a progress bar; rerunning resumes.
 */
import { preprocessDataset } from "../data/preprocess.ts";

const args = Deno.args;
const opt = (k: string, d: string) => (args.includes(`--${k}`) ? args[args.indexOf(`--${k}`) + 1] : d);
const data = opt("data", "out/synth"), cache = opt("cache", `${opt("data", "out/synth")}/cache`);
const workers = Number(opt("workers", String(navigator.hardwareConcurrency ?? 2)));
const res = await preprocessDataset(data, cache, {
  workers,
  units: args.includes("--hu") ? "hu" : "stored",
  onProgress: (p) => {
    const w = 30, f = Math.round((w * p.done) / p.total);
    const eta = (p.seconds / p.done) * (p.total - p.done);
    const line = `[${"#".repeat(f)}${".".repeat(w - f)}] ${p.done}/${p.total} studies, ${
      p.seconds.toFixed(1)
    } s, ETA ${eta.toFixed(0)} s`;
    Deno.stdout.writeSync(new TextEncoder().encode(`\r${line}`));
  },
});
console.log(
  `\n${res.processed.length} studies preprocessed, ${res.skipped.length} already cached; cache: ${cache}`,
);
