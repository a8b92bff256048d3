/**
 * @file The segmentation stage (seed-pipeline.md 2): the CSN-UNet trained on windows of the studies that
 * have masks, validated by whole-volume sliding-window dice on the held-out fold; and the mask prediction
 * for a whole dataset with its metadata (seed stage 3), which the classifier stage and inference read.
 */
import { type Device, models, tensor } from "../mod.ts";
import { listCached, readCube, readHeader } from "../data/cache.ts";
import { readFoldsCsv, writeFoldsCsv } from "../data/rsna.ts";
import { drawAugment, segAugment } from "../data/augment.ts";
import { DiceMeter } from "../infer/dice.ts";
import { predictVolume } from "../infer/segment.ts";
import { type SegSample, segWindowStart } from "./seg_data.ts";
import type { TrainTask } from "./trainer.ts";
import { buildModel, type ModelConfig } from "../infer/load.ts";
import type { SegConfig } from "./presets.ts";
import type { Progress } from "../cli/progress.ts";

/** A cached study usable by the segmentation stage. */
export interface SegStudy {
  uid: string;
  /** Slices of the [::2]-subsampled cube. */
  z2: number;
  mean2: number;
  std2: number;
}

/** Builds the CSN-UNet of a configuration, from the same model config that config.json stores. */
export function buildSegModel(device: Device, c: SegConfig): models.CSNUNet {
  return buildModel(device, segModelConfig(c)) as models.CSNUNet;
}

/** The cached studies that have a mask, with their [::2] geometry and statistics. */
export async function segStudies(cache: string): Promise<SegStudy[]> {
  const out: SegStudy[] = [];
  for (const uid of await listCached(cache)) {
    const h = await readHeader(cache, uid).catch(() => null);
    if (!h?.cubes.mask_256 || !h.cubes.image_256) continue;
    out.push({ uid: h.uid, z2: Math.ceil(h.cubes.image_256[0] / 2), mean2: h.mean2, std2: h.std2 });
  }
  return out.sort((a, b) => (a.uid < b.uid ? -1 : 1));
}

/**
 * The fold of every segmented study: `<cache>/seg_folds.csv` (the seed's seg_folds.csv), written with `k`
 * folds when absent; an existing file must cover every study.
 */
export async function segFolds(cache: string, studies: SegStudy[], k: number): Promise<Map<string, number>> {
  const path = `${cache}/seg_folds.csv`;
  if (await Deno.stat(path).then(() => true, () => false)) {
    const f = await readFoldsCsv(path);
    const missing = studies.filter((s) => !f.has(s.uid));
    if (missing.length) {
      throw new Error(`${path}: no fold for ${missing.length} segmented studies (e.g. ${missing[0].uid})`);
    }
    return f;
  }
  const f = new Map<string, number>();
  studies.forEach((s, i) => f.set(s.uid, i % k));
  await writeFoldsCsv(path, f);
  return f;
}

/** The segmentation task for the harness. */
export function segTask(o: {
  device: Device;
  model: models.CSNUNet;
  cache: string;
  train: SegStudy[];
  val: SegStudy[];
  config: SegConfig;
}): TrainTask<SegSample> {
  const c = o.config;
  const n = o.train.length;
  return {
    name: "seg",
    model: o.model,
    items: n * c.multiplier,
    job(item, rnd) {
      const s = o.train[item % n];
      const start = segWindowStart(s.z2, c.slices, rnd);
      const plan = c.augment ? drawAugment(segAugment(c.size), rnd, c.size, c.size) : null;
      return {
        kind: "seg",
        cache: o.cache,
        spec: { uid: s.uid, start, slices: c.slices, size: c.size, mean: s.mean2, std: s.std2, plan },
      };
    },
    loss(batch) {
      const [Z, H, W] = batch[0].shape;
      const B = batch.length, vox = Z * H * W;
      const x = new Float32Array(B * vox), t = new Int32Array(B * vox);
      batch.forEach((s, i) => {
        x.set(s.image, i * vox);
        t.set(s.target, i * vox);
      });
      const logits = o.model.forward(tensor(x, [B, 1, Z, H, W], { device: o.device }));
      return models.segLoss(logits, tensor(t, [B, Z, H, W], { device: o.device }), {
        jaccardWeight: c.jaccardWeight,
        fgWeight: c.fgWeight ?? 1,
      });
    },
    async validate(progress: Progress) {
      const meter = new DiceMeter();
      for (const [i, s] of o.val.entries()) {
        const img = await readCube(o.cache, s.uid, "image_256", { zStep: 2 });
        const msk = await readCube(o.cache, s.uid, "mask_256", { zStep: 2 });
        const p = await predictVolume([o.model], { data: img.data, shape: img.shape }, {
          mean: s.mean2,
          std: s.std2,
          window: c.valWindow,
          overlap: c.valOverlap,
          padMultiple: 32,
          size: c.size,
          probs: true,
        });
        meter.add(p.above!, msk.data as Uint8Array);
        progress.update(`seg validation ${i + 1}/${o.val.length} studies`);
      }
      const r = meter.compute();
      const metrics: Record<string, number> = { dice: r.dice };
      r.perClass.forEach((d, k) => {
        if (d !== null) metrics[`dice_C${k + 1}`] = d;
      });
      return metrics;
    },
    metric: { name: "dice", mode: "max" },
  };
}

/** Model options stored in config.json, so a run folder says how to rebuild its model. */
export function segModelConfig(c: SegConfig): ModelConfig {
  return {
    model: "CSNUNet",
    encoder: c.encoder,
    baseChannels: c.baseChannels,
    decoderFilters: c.decoderFilters,
    lastChannels: c.lastChannels,
    numClasses: 8,
    size: c.size,
  };
}

/** A seg run's validation dice per level, from its log (what {@link segValidationDice} returns). */
export interface SegDiceReport {
  /** The epoch whose weights best.safetensors holds (the highest mean dice), 1-based, and epochs logged. */
  epoch: number;
  epochs: number;
  /** The validation fold and its studies (seg_folds.csv of the run's cache). */
  fold: number;
  studies: number;
  /** C1..C7, null for a level no validation study had enough voxels of; and the validator's mean. */
  perLevel: (number | null)[];
  mean: number;
}

/**
 * The per-level validation dice of a seg run folder at its best epoch (the weights `predict-seg` and
 * inference use, best.safetensors), read from the epoch records of its log.jsonl; null before any
 * validation.
 */
export async function segValidationDice(runDir: string): Promise<SegDiceReport | null> {
  const text = await Deno.readTextFile(`${runDir}/log.jsonl`).catch(() => "");
  // Epoch records carry metrics; step records do not.
  const epochs = text.split("\n").filter((l) => l.trim())
    .map((l) => JSON.parse(l) as { epoch: number; metrics?: Record<string, number> })
    .filter((r): r is { epoch: number; metrics: Record<string, number> } => Number.isFinite(r.metrics?.dice));
  if (!epochs.length) return null;
  // The first of equal maxima, as the trainer keeps its best (a later tie does not replace it).
  const best = epochs.reduce((a, b) => (b.metrics.dice > a.metrics.dice ? b : a));
  const cfg = JSON.parse(await Deno.readTextFile(`${runDir}/config.json`));
  const folds = await readFoldsCsv(`${cfg.cache}/seg_folds.csv`).catch(() => new Map<string, number>());
  return {
    epoch: best.epoch,
    epochs: epochs.length,
    fold: cfg.fold,
    studies: [...folds.values()].filter((f) => f === cfg.fold).length,
    perLevel: [1, 2, 3, 4, 5, 6, 7].map((c) => best.metrics[`dice_C${c}`] ?? null),
    mean: best.metrics.dice,
  };
}
