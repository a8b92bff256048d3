/**
 * @file The classifier stage (seed-pipeline.md 4): a CSN classifier trained on vertebra crops guided by the
 * predicted masks, with the seed's weighted sampler and plain mean BCE-with-logits, validated per study
 * (one crop per vertebra, per-output max over crops, clipped) with the competition metric (lower is
 * better); and the folds file the stage shares with inference.
 */
import { type Device, F, models, type nn, type Tensor, tensor } from "../mod.ts";
import { makeFolds, readBoundingBoxes, readFoldsCsv, readTrainCsv, writeFoldsCsv } from "../data/rsna.ts";
import { listCached } from "../data/cache.ts";
import { readSegMetaFile } from "../infer/meta.ts";
import { aggregateStudy, competitionScore } from "../infer/metric.ts";
import { classifyCrops } from "../infer/pipeline.ts";
import { type ClsStudy, drawClsTrainSpec, weightedSampler } from "../infer/crops.ts";
import { readClsStudy, readClsValItem } from "../infer/crops/read.ts";
import type { TrainTask } from "./trainer.ts";
import { buildModel, type ModelConfig } from "../infer/load.ts";
import type { ClsConfig } from "./presets.ts";
import type { Progress } from "../cli/progress.ts";
import type { ClsSample } from "../infer/crops.ts";

/** Builds the classifier of a configuration, from the same model config that config.json stores. */
export function buildClsModel(device: Device, c: ClsConfig): nn.Module {
  return buildModel(device, clsModelConfig(c));
}

/** Model options stored in config.json (how inference rebuilds the model). */
export function clsModelConfig(c: ClsConfig): ModelConfig {
  if (c.encoder === "plain") {
    return {
      model: "PlainClassifier",
      encoder: "plain",
      widths: c.widths ?? [16, 32, 64, 64],
      numClasses: 8,
      pool: "max",
      dropout: c.dropout,
      fractureHead: (c.fractureWeight ?? 0) > 0,
      crop: c.crop,
      minArea: c.minArea,
    };
  }
  return {
    model: "CSNClassifier",
    encoder: c.encoder,
    baseChannels: c.baseChannels,
    numClasses: 8,
    pool: "max",
    dropout: c.dropout,
    crop: c.crop,
    minArea: c.minArea,
  };
}

/**
 * The studies the stage can use: cached, with a predicted mask (`deno task train predict-seg`) and a row in
 * train.csv. Studies missing either are listed so the caller can report them. With `boxesCsv` (RSNA's
 * train_bounding_boxes.csv) each study also knows where its fractures are, where the file says.
 */
export async function clsStudies(
  cache: string,
  trainCsv: string,
  boxesCsv?: string,
): Promise<{ studies: ClsStudy[]; noPrediction: string[]; noLabels: string[] }> {
  const rows = await readTrainCsv(trainCsv);
  const boxes = boxesCsv ? await readBoundingBoxes(boxesCsv) : null;
  const labels = new Map(rows.map((r) => [r.uid, r.labels]));
  const uids = await listCached(cache);
  const studies: ClsStudy[] = [], noPrediction: string[] = [], noLabels: string[] = [];
  for (const uid of uids) {
    const l = labels.get(uid);
    if (!l) {
      noLabels.push(uid);
      continue;
    }
    const has = await readSegMetaFile(cache, uid).then(() => true, () => false);
    if (!has) {
      noPrediction.push(uid);
      continue;
    }
    studies.push(await readClsStudy(cache, uid, l, boxes ? boxes.get(uid) ?? null : undefined));
  }
  return { studies, noPrediction, noLabels };
}

/**
 * The fold of every study: `path` (the seed's folds.csv: `cube_id`/`StudyInstanceUID`, `fold`), written
 * stratified by patient_overall with `k` folds when absent; an existing file must cover every study.
 */
export async function clsFolds(path: string, studies: ClsStudy[], k: number): Promise<Map<string, number>> {
  if (await Deno.stat(path).then(() => true, () => false)) {
    const f = await readFoldsCsv(path);
    const missing = studies.filter((s) => !f.has(s.uid));
    if (missing.length) {
      throw new Error(`${path}: no fold for ${missing.length} studies (e.g. ${missing[0].uid})`);
    }
    return f;
  }
  const f = makeFolds(studies.map((s) => ({ uid: s.uid, labels: s.labels })), k, 0);
  await writeFoldsCsv(path, f);
  return f;
}

/** How a configuration cuts its validation crops (configurations before the option had the seed's rule). */
function clsCropOptions(c: ClsConfig) {
  return {
    slices: c.crop[0],
    size: c.crop[1],
    minArea: c.minArea,
    seedValBug: c.seedValBug,
    seedVisibility: c.seedVisibility ?? true,
  };
}

/**
 * The classifier's study probabilities on `val` (one crop per vertebra, per-output max over crops, clipped:
 * what its validation scores) and the studies' labels, uid -> 8 values each.
 */
export async function clsValPredictions(
  model: nn.Module,
  cache: string,
  val: ClsStudy[],
  c: ClsConfig,
  progress?: Progress,
): Promise<{ pred: Map<string, number[]>; truth: Map<string, number[]> }> {
  const pred = new Map<string, number[]>(), truth = new Map<string, number[]>();
  for (const [i, s] of val.entries()) {
    const item = await readClsValItem(cache, s, clsCropOptions(c));
    const logits = await classifyCrops(model, item.input, item.shape);
    pred.set(s.uid, aggregateStudy(logits, item.shape[0]));
    truth.set(s.uid, Array.from(item.labels));
    progress?.update(`cls validation ${i + 1}/${val.length} studies`);
  }
  return { pred, truth };
}

/**
 * The fracture-map loss of a batch: BCE (pos_weight `posWeight`) of the map's logits [N, 1, d, h, w] against
 * each known sample's boxes max-pooled onto the map's cells, averaged over the known samples' cells; null when
 * no sample of the batch knows its fractures.
 */
function fractureLoss(map: Tensor, batch: ClsSample[], posWeight: number): Tensor | null {
  const known = batch.map((s) => s.fractures !== null);
  const nKnown = known.filter((k) => k).length;
  if (!nKnown) return null;
  const [N, , D, S] = [batch.length, ...batch[0].shape];
  const [d, h, w] = map.shape.slice(2);
  const cells = new Float32Array(N * d * h * w);
  batch.forEach((s, i) => {
    if (s.fractures) cells.set(poolMax(s.fractures, [D, S, S], [d, h, w]), i * d * h * w);
  });
  const device = map.device;
  const target = tensor(cells, map.shape, { device });
  const weight = tensor(Float32Array.from(known, (k) => (k ? 1 : 0)), [N, 1, 1, 1, 1], { device });
  const pw = tensor([posWeight], [1], { device });
  const sum = F.bceWithLogits(map, target, { weight, posWeight: pw, reduction: "sum" });
  const r = F.mul(sum, 1 / (nKnown * d * h * w));
  for (const t of [target, weight, pw, sum]) t.dispose();
  return r;
}

/** Adaptive max pooling of a 0/1 volume [D, H, W] onto [d, h, w] cells (PyTorch's bins: floor start, ceil end). */
function poolMax(v: Uint8Array, from: number[], to: number[]): Float32Array {
  const [D, H, W] = from, [d, h, w] = to;
  const bin = (i: number, n: number, N: number) => [Math.floor((i * N) / n), Math.ceil(((i + 1) * N) / n)];
  const out = new Float32Array(d * h * w);
  const any = (zs: number[], ys: number[], xs: number[]) => {
    for (let z = zs[0]; z < zs[1]; z++) {
      for (let y = ys[0]; y < ys[1]; y++) {
        for (let x = xs[0]; x < xs[1]; x++) if (v[(z * H + y) * W + x]) return true;
      }
    }
    return false;
  };
  for (let cz = 0; cz < d; cz++) {
    for (let cy = 0; cy < h; cy++) {
      for (let cx = 0; cx < w; cx++) {
        if (any(bin(cz, d, D), bin(cy, h, H), bin(cx, w, W))) out[(cz * h + cy) * w + cx] = 1;
      }
    }
  }
  return out;
}

/** The classifier task for the harness. */
export function clsTask(o: {
  device: Device;
  model: nn.Module;
  cache: string;
  train: ClsStudy[];
  val: ClsStudy[];
  config: ClsConfig;
}): TrainTask<ClsSample> {
  const c = o.config;
  const [D, S] = [c.crop[0], c.crop[1]];
  const data = clsCropOptions(c);
  const n = o.train.length;
  const items = n * c.multiplier;
  const overall = Array.from({ length: items }, (_, i) => o.train[i % n].labels[0]);
  return {
    name: "cls",
    model: o.model,
    items,
    order: (_epoch, rnd) => weightedSampler(overall, items, rnd),
    job: (item, rnd) => ({
      kind: "cls",
      cache: o.cache,
      spec: drawClsTrainSpec(o.train[item % n], rnd, data),
    }),
    loss(batch) {
      const per = 3 * D * S * S;
      const x = new Float32Array(batch.length * per), y = new Float32Array(batch.length * 8);
      batch.forEach((s, i) => {
        x.set(s.input, i * per);
        y.set(s.labels, i * 8);
      });
      const input = tensor(x, [batch.length, 3, D, S, S], { device: o.device });
      const target = tensor(y, [batch.length, 8], { device: o.device });
      const m = o.model;
      if (!(m instanceof models.PlainClassifier && m.fractureHead && c.fractureWeight)) {
        return F.bceWithLogits(m.forward(input), target);
      }
      const { logits, map } = m.forwardWithMap(input);
      const cls = F.bceWithLogits(logits, target);
      const frac = fractureLoss(map, batch, c.fracturePosWeight ?? 10);
      if (!frac) return cls;
      return F.add(cls, F.mul(frac, c.fractureWeight));
    },
    async validate(progress: Progress) {
      const { pred, truth } = await clsValPredictions(o.model, o.cache, o.val, c, progress);
      const r = competitionScore(pred, truth);
      return {
        loss: r.score,
        ...Object.fromEntries(Object.entries(r.perTarget).map(([k, v]) => [`loss_${k}`, v])),
      };
    },
    metric: { name: "loss", mode: "min" },
  };
}
