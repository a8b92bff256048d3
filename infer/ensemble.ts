/**
 * @file The models of an inference run from `--weights`: files or run folders, comma-separated, sorted into
 * the segmentor(s) and the classifier ensemble by their stored configuration. A folder from `train all`
 * (`seg/` and `cls-*` run folders) expands to its members; a classifier run folder prefers its averaged
 * checkpoint (`swa-best-N.safetensors`).
 */
import type { Device } from "../mod.ts";
import { type LoadedModel, loadModel } from "./load.ts";

/** A loaded model with where it came from (and a classifier's calibration, applied to its probabilities). */
export type Member = LoadedModel;

async function isDir(p: string): Promise<boolean> {
  return await Deno.stat(p).then((s) => s.isDirectory, () => false);
}

/** Expands one `--weights` entry to checkpoint paths or run folders. */
export async function expandWeights(spec: string): Promise<string[]> {
  if (!await isDir(spec)) return [spec];
  if (await Deno.stat(`${spec}/config.json`).then(() => true, () => false)) {
    const swa = [];
    for await (const e of Deno.readDir(spec)) {
      if (/^swa-best-\d+\.safetensors$/.test(e.name)) swa.push(e.name);
    }
    return swa.length ? [`${spec}/${swa.sort()[0]}`] : [spec];
  }
  // A pipeline folder: its run folders.
  const runs: string[] = [];
  for await (const e of Deno.readDir(spec)) {
    if (e.isDirectory && await Deno.stat(`${spec}/${e.name}/config.json`).then(() => true, () => false)) {
      runs.push(`${spec}/${e.name}`);
    }
  }
  if (!runs.length) {
    throw new Error(`${spec}: neither a checkpoint, a run folder nor a folder of run folders`);
  }
  const out: string[] = [];
  for (const r of runs.sort()) out.push(...await expandWeights(r));
  return out;
}

/**
 * Loads every model of `--weights` and sorts them into the segmentor(s) and classifiers; `calibrate: false`
 * drops the classifiers' calibrations (their raw probabilities are used).
 */
export async function loadEnsemble(
  weights: string,
  device: Device,
  opts: { calibrate?: boolean } = {},
): Promise<{ seg: Member[]; cls: Member[] }> {
  const specs = weights.split(",").map((s) => s.trim()).filter(Boolean);
  if (!specs.length) throw new Error("--weights: no checkpoint given");
  const seg: Member[] = [], cls: Member[] = [];
  try {
    for (const s of specs) {
      for (const p of await expandWeights(s)) {
        const m = await loadModel(p, device);
        if (opts.calibrate === false) delete m.calibration;
        (m.config.model === "CSNUNet" ? seg : cls).push(m);
      }
    }
  } catch (e) {
    for (const m of [...seg, ...cls]) m.model.dispose();
    throw e;
  }
  if (!seg.length) throw new Error(`--weights ${weights}: no segmentation model (CSNUNet) among them`);
  if (!cls.length) throw new Error(`--weights ${weights}: no classifier (CSNClassifier) among them`);
  const sizes = new Set(seg.map((m) => m.config.size ?? 256));
  if (sizes.size > 1) throw new Error(`--weights: segmentors trained at different sizes (${[...sizes]})`);
  return { seg, cls };
}
