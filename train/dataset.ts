/**
 * @file Where a stage's data comes from: `--data DIR` (the RSNA layout) or, by default, the built-in
 * phantoms written once under out/phantoms; and the preprocessing cache, filled for studies not yet in it.
 */
import { PHANTOM_VERSION, writeSyntheticDataset } from "../data/synth.ts";
import { preprocessDataset } from "../data/preprocess.ts";
import { listCached } from "../data/cache.ts";
import type { Flags } from "../cli/flags.ts";

/** The built-in dataset: 96 phantom studies, about half with masks. */
export const PHANTOMS = { dir: "out/phantoms", studies: 96, seed: 2026, size: 128, maskFraction: 0.5 };

/**
 * Writes the phantoms unless the same ones are there (`phantoms.json` records what was written; a folder of
 * other phantoms, or one left half-written, is written again).
 */
export async function ensurePhantoms(dir = PHANTOMS.dir): Promise<{ dir: string; written: boolean }> {
  const spec = JSON.stringify({ ...PHANTOMS, dir: undefined, version: PHANTOM_VERSION });
  const have = await Deno.readTextFile(`${dir}/phantoms.json`).catch(() => "");
  if (have === spec) return { dir, written: false };
  console.log(`writing ${PHANTOMS.studies} phantom studies to ${dir} ...`);
  await Deno.remove(dir, { recursive: true }).catch(() => {});
  await writeSyntheticDataset({ ...PHANTOMS, out: dir });
  await Deno.writeTextFile(`${dir}/phantoms.json`, spec);
  return { dir, written: true };
}

/**
 * Resolves `--data` / `--cache`: with `--cache` alone the cache is used as it is (it must hold studies);
 * otherwise the dataset (default: phantoms) is preprocessed into the cache for the studies missing there.
 */
export async function ensureCache(f: Flags): Promise<{ cache: string; data: string | null }> {
  if (f.cache && !f.data) {
    const cache = f.cache as string;
    const n = (await listCached(cache)).length;
    if (!n) throw new Error(`${cache}: the cache holds no studies (preprocess with --data DIR first)`);
    return { cache, data: null };
  }
  let data = f.data as string | undefined, fresh = false;
  if (!data) ({ dir: data, written: fresh } = await ensurePhantoms());
  if (!await Deno.stat(`${data}/train_images`).then((s) => s.isDirectory, () => false)) {
    throw new Error(`${data}: no train_images/ folder (expected the RSNA layout)`);
  }
  const cache = (f.cache as string | undefined) ?? `out/cache/${data.replace(/\/+$/, "").split("/").pop()}`;
  // New phantoms reuse uids: a cache of the previous ones would mix old and new studies.
  if (fresh && !f.cache) await Deno.remove(cache, { recursive: true }).catch(() => {});
  let last = 0;
  const r = await preprocessDataset(data, cache, {
    workers: Math.max(1, f.workers as number),
    onProgress: (p) => {
      if (p.done === p.total || performance.now() - last > 5000) {
        last = performance.now();
        console.log(`preprocessing ${p.done}/${p.total} studies (${p.seconds.toFixed(0)} s)`);
      }
    },
  });
  if (r.processed.length) console.log(`preprocessed ${r.processed.length} studies into ${cache}`);
  return { cache, data };
}
