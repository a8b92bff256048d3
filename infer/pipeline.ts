/**
 * @file `deno task infer`: studies in, fracture probabilities out. Per study, one at a time with bounded
 * memory: read the DICOM series and preprocess it in memory (the seed's steps, no cache), segment it with the
 * sliding window (an ensemble sums softmaxes), compute the metadata, cut one crop per vertebra, run every
 * classifier (optionally with horizontal-flip TTA), aggregate per study (sigmoid, max over crops, clip) and
 * average the classifiers. Reading the next study overlaps the device work of the current one (a Worker).
 *
 * Outputs in `out/`: submission.csv (8 rows per study), predictions.jsonl (per study: probabilities, boxes,
 * voxel counts, timings, or the error), `<uid>/vertebrae.nii.gz` (labels on the study's own grid),
 * `<uid>/report.html` and index.html; with a truth file, score.json (the score beside the best constant
 * prediction, and the per-level dice where ground-truth masks exist). A failing study is reported with its
 * reason and the others go on; `resume` skips studies already written.
 */
import { type nn, noGrad, openDevice, tensor, tidy } from "../mod.ts";
import { writeFileAtomic } from "../io/files.ts";
import { findStudies, type StudyRef } from "./discover.ts";
import { loadEnsemble, type Member } from "./ensemble.ts";
import { predictVolume } from "./segment.ts";
import {
  computeMeta,
  DEFAULT_POSTPROCESS,
  postprocessLabels,
  type SegPostprocess,
  type StudyMeta,
} from "./meta.ts";
import { aggregateStudy } from "./metric.ts";
import { applyCalibration } from "./calibrate.ts";
import { readTrainCsv } from "../data/rsna.ts";
import { writeSubmission } from "./score.ts";
import { type InMemoryStudy, StudyLoader } from "./study_loader.ts";
import { clsValItemFromMemory, CropStacks } from "./crops/read.ts";
import { cropSlice, indexHtml, type ReportCrop } from "./report.ts";
import { StudyWriter } from "./study_writer.ts";
import { evaluate, type Evaluation, findTrainLabels, summaryLine } from "./evaluate.ts";
import { duration, Progress } from "../cli/progress.ts";

/** Options of {@link runInference} (the resolved flags). */
export interface InferOptions {
  data?: string;
  study?: string;
  weights: string;
  out: string;
  truth?: string;
  /**
   * Ground-truth masks `<uid>.nii` for the dice; default: the RSNA layout's `segmentations/` beside the
   * studies' `train_images/` (or `test_images/`).
   */
  masks?: string;
  /**
   * The classifier's training labels (a train.csv), whose positive rates are the constant baseline; default:
   * the `labels` a classifier run among the weights names, else the truth's own prevalence (an oracle).
   */
  trainLabels?: string;
  tta: "none" | "flip";
  /** Apply the classifiers' calibrations (infer/calibrate.ts) where their checkpoints carry one. */
  calibrate: boolean;
  resume: boolean;
  window: number;
  overlap: number;
  /** How the segmentation's argmax is cleaned before the crops (default "largest", see meta.ts). */
  postprocess?: SegPostprocess;
  report: boolean;
  nifti: boolean;
}

/**
 * The seed's inference settings, `deno task infer`'s defaults: no TTA, segmentation windows of 384 [::2]
 * slices overlapping by 128; and, not the seed's, each level's largest connected component (meta.ts
 * SegPostprocess) and the classifiers' calibrations applied (calibrate.ts).
 * Every caller that means "as infer does" spreads these.
 */
export const INFER_DEFAULTS = {
  tta: "none",
  window: 384,
  overlap: 128,
  postprocess: DEFAULT_POSTPROCESS,
  calibrate: true,
} as const;

/** One line of predictions.jsonl. */
export interface StudyResult {
  uid: string;
  ok: boolean;
  error?: string;
  /** patient_overall, C1..C7. */
  probabilities?: number[];
  /** Per vertebra "1".."7": box on the [::2] x 256 x 256 grid and predicted voxel count. */
  vertebrae?: Record<string, { box: number[]; voxels: number }>;
  /** Seconds per step. */
  timings?: Record<string, number>;
  /** Per-level dice C1..C7 against the ground-truth mask (`mask`), when the study has one. */
  dice?: (number | null)[];
  /** The ground-truth mask used for `dice`. */
  mask?: string;
  /** Why the ground-truth mask could not be compared (the prediction itself is kept). */
  maskError?: string;
}

/** Horizontal flip (last axis) of a stack of crops [..., S], into `out` (a new array by default). */
export function flipLastAxis(
  x: Float32Array,
  width: number,
  out: Float32Array = new Float32Array(x.length),
): Float32Array {
  for (let r = 0; r < x.length; r += width) {
    for (let i = 0; i < width; i++) out[r + i] = x[r + width - 1 - i];
  }
  return out;
}

/**
 * Classifier logits [k, numClasses] of a stack of crops [k, 3, D, S, S], run as few batches as the adapter
 * allows: the largest activation (the stem's 64 x D x S/2 x S/2 per crop) is kept within one storage binding
 * (1 GiB on a large GPU: a study's 7 seed-size crops in 2 batches) but at least 128 Mi elements (lavapipe's
 * bindings are 128 MiB; tensors above that are bound in windows), since a study's 7+ seed-size crops at once
 * would need tensors of several GiB.
 */
export async function classifyCrops(
  model: nn.Module,
  input: Float32Array,
  shape: number[],
): Promise<Float32Array> {
  const [k, C, D, H, W] = shape;
  const per = C * D * H * W;
  const device = model.parameters()[0].device;
  const cap = Math.max(2 ** 27, Math.floor(device.bindingCap / 4));
  const chunk = Math.max(1, Math.floor(cap / (64 * D * Math.ceil(H / 2) * Math.ceil(W / 2))));
  const parts: Float32Array[] = [];
  for (let i = 0; i < k; i += chunk) {
    const n = Math.min(chunk, k - i);
    parts.push(
      await tidy(async () => {
        const x = tensor(input.subarray(i * per, (i + n) * per), [n, C, D, H, W], { device });
        return (await noGrad(() => model.forward(x)).toArray()) as Float32Array;
      }),
    );
  }
  const out = new Float32Array(parts.reduce((a, p) => a + p.length, 0));
  let o = 0;
  for (const p of parts) out.set(p, o), (o += p.length);
  return out;
}

/**
 * The classifier ensemble's probabilities for one study: mean over members of each member's aggregate
 * (mean over the TTA views), through the member's calibration when its checkpoint has one.
 * `lap` is called after each member's crops are cut ("crops", host work) and after each forward
 * ("classify", device work). Crop stacks come from `stacks` when given and go back to it, all but the one
 * that `crops` (for the report) points into: `release()` gives that one back once the report's pictures
 * are drawn.
 */
export async function classifyStudy(
  members: Member[],
  study: InMemoryStudy,
  labels: Uint8Array,
  meta: StudyMeta,
  tta: "none" | "flip",
  lap: (step: string) => void = () => {},
  stacks?: CropStacks,
): Promise<{ probabilities: number[]; crops: ReportCrop[]; release: () => void }> {
  const sum = new Array(8).fill(0);
  let crops: ReportCrop[] = [];
  let kept: Float32Array | null = null;
  for (const m of members) {
    const crop = (m.config.crop as [number, number] | undefined) ?? [40, 256];
    const item = await clsValItemFromMemory(study, labels, meta, { slices: crop[0], size: crop[1] }, stacks);
    const [k, , , , S] = item.shape;
    const flipped = tta === "flip" ? flipLastAxis(item.input, S, stacks?.take(item.input.length)) : null;
    const views = flipped ? [item.input, flipped] : [item.input];
    lap("crops");
    const probs = new Array(8).fill(0);
    for (const v of views) {
      const logits = await classifyCrops(m.model, v, item.shape);
      aggregateStudy(logits, k).forEach((p, j) => (probs[j] += p / views.length));
    }
    lap("classify");
    if (flipped) stacks?.give(flipped);
    const calibrated = m.calibration ? applyCalibration(probs, m.calibration) : probs;
    calibrated.forEach((p, j) => (sum[j] += p / members.length));
    if (crops.length) stacks?.give(item.input);
    else {
      kept = item.input;
      const per = item.input.length / k;
      // The report shows one crop per vertebra (a vertebra longer than D slices has two).
      crops = item.vertebrae.map((vert, i) => ({
        vertebra: vert,
        crop: meta.boxes[String(vert)] ? item.input.subarray(i * per, (i + 1) * per) : null,
        shape: item.shape.slice(1) as [number, number, number, number],
      })).filter((c, i, all) => all.findIndex((d) => d.vertebra === c.vertebra) === i);
    }
  }
  return { probabilities: sum, crops, release: () => kept && stacks?.give(kept) };
}

/** How a classifier's probabilities are used: its calibration's slopes, or raw. */
export function calibrationLine(m: Member): string {
  const c = m.calibration;
  if (!c) {
    return `classifier ${m.path}: raw probabilities (no calibration in the checkpoint, or --no-calibrate)`;
  }
  return `classifier ${m.path}: calibrated on ${c.studies} validation studies, keeps ${
    c.slope.overall.toFixed(2)
  } of its patient_overall logit and ${c.slope.vertebrae.toFixed(2)} of its vertebra logits around the ` +
    `best constant of its run's labels (0: the constant, 1: the model's own spread)`;
}

async function readDone(path: string): Promise<Map<string, StudyResult>> {
  const text = await Deno.readTextFile(path).catch(() => "");
  const done = new Map<string, StudyResult>();
  for (const line of text.split("\n")) {
    if (!line.trim()) continue;
    try {
      const r = JSON.parse(line) as StudyResult;
      done.set(r.uid, r);
    } catch {
      // a line cut by a kill: that study is processed again
    }
  }
  return done;
}

/** Runs inference; returns what was done and what failed. */
export async function runInference(o: InferOptions): Promise<{
  total: number;
  failed: { uid: string; error: string }[];
  score?: number;
  /** With a truth file: the score, the baseline beside it, the dice (what score.json holds). */
  evaluation?: Evaluation;
}> {
  const studies = await findStudies(o);
  await Deno.mkdir(o.out, { recursive: true });
  const jsonl = `${o.out}/predictions.jsonl`;
  const done = o.resume ? await readDone(jsonl) : new Map<string, StudyResult>();
  if (!o.resume) await writeFileAtomic(jsonl, new Uint8Array(0), "predictions");
  else {
    // Rewrite without cut lines and without failures (they are tried again).
    const keep = [...done.values()].filter((r) => r.ok);
    done.clear();
    for (const r of keep) done.set(r.uid, r);
    await writeFileAtomic(
      jsonl,
      new TextEncoder().encode(keep.map((r) => JSON.stringify(r) + "\n").join("")),
    );
  }
  const device = await openDevice();
  const { seg, cls } = await loadEnsemble(o.weights, device, { calibrate: o.calibrate });
  const segSize = seg[0].config.size ?? 256;
  // The crop stacks of one study serve the next (its report reads them until its write phase ends).
  const stacks = new CropStacks();
  console.log(
    `infer: ${studies.length} studies, ${seg.length} segmentor(s) + ${cls.length} classifier(s) ` +
      `(${cls.map((c) => c.config.encoder).join(", ")}), TTA ${o.tta}; device ${device.info.description}`,
  );
  for (const m of cls) console.log(`infer: ${calibrationLine(m)}`);
  const todo = studies.filter((s) => !done.has(s.uid));
  if (done.size) console.log(`infer: ${done.size} studies already written, skipped (--resume)`);
  const loader = new StudyLoader();
  const writer = new StudyWriter();
  const progress = new Progress(1);
  const t0 = performance.now();
  const failed: { uid: string; error: string }[] = [];
  // A study's files (NIfTI, report, dice: CPU work) are written while the device works on the next study;
  // `writing` is the previous study's, awaited before this one's line so predictions.jsonl keeps the order.
  let writing: Promise<void> = Promise.resolve();
  let beforeLast: Promise<void> = Promise.resolve(); // the `writing` before it
  const settle = async (i: number, ref: StudyRef, make: () => Promise<StudyResult>, prev: Promise<void>) => {
    let result: StudyResult;
    try {
      result = await make();
    } catch (e) {
      result = { uid: ref.uid, ok: false, error: (e as Error).message };
    }
    await prev;
    if (!result.ok) failed.push({ uid: ref.uid, error: result.error! });
    await Deno.writeTextFile(jsonl, JSON.stringify(result) + "\n", { append: true });
    done.set(ref.uid, result);
    const sec = (performance.now() - t0) / 1000, per = sec / (i + 1);
    progress.update(
      `infer ${i + 1}/${todo.length} studies, ${per.toFixed(1)} s/study, ETA ${
        duration(per * (todo.length - i - 1))
      }` +
        (failed.length ? `, ${failed.length} failed` : ""),
      true,
    );
  };
  try {
    // Reading runs two studies ahead and segmenting one: the device segments study i + 1 while the host
    // computes study i's metadata and cuts its crops (then classifies them, after that segmentation).
    const loads: (Promise<InMemoryStudy> | undefined)[] = [];
    const load = (j: number) => {
      if (j < todo.length && !loads[j]) {
        loads[j] = loader.load(todo[j].dir);
        loads[j]!.catch(() => {}); // reported when its turn comes
      }
      return loads[j]!;
    };
    const ctx: PhaseContext = { seg, cls, segSize, o, stacks };
    const segment = (j: number) => segmentPhase(load(j), ctx).catch((e: Error) => e);
    let segmenting = todo.length ? segment(0) : null;
    load(1);
    for (let i = 0; i < todo.length; i++) {
      const ref: StudyRef = todo[i];
      const segmented = await segmenting!;
      loads[i] = undefined;
      load(i + 2);
      segmenting = i + 1 < todo.length ? segment(i + 1) : null;
      // One microtask turn: a read study's segmentation reaches the device before this study's host work.
      await Promise.resolve();
      const predicted = segmented instanceof Error
        ? segmented
        : await classifyPhase(segmented, ctx).catch((e: Error) => e);
      // At most two studies' files in the writer's queue (each holds a study's images).
      await beforeLast;
      beforeLast = writing;
      writing = settle(i, ref, () => {
        if (predicted instanceof Error) throw predicted;
        return writePhase(ref, predicted, o, writer);
      }, writing);
    }
    await writing;
  } finally {
    await writing.catch(() => {});
    progress.done();
    loader.close();
    writer.close();
    if (device.profiler) {
      console.log(
        `infer: GPU time by kernel over the run (CSN_PROFILE=1):\n${await device.profiler.report(30)}`,
      );
    }
    if (device.tuner) {
      // (a failed run's own error is the one to report)
      await device.sync().catch(() => {});
      console.log(
        `infer: kernel variants timed on the device (CSN_BENCHMARK=1):\n${device.tuner.report(20)}`,
      );
    }
    for (const m of [...seg, ...cls]) m.model.dispose();
    device.destroy();
  }
  const ev = await finish(o, done);
  return { total: studies.length, failed, score: ev?.score.score, evaluation: ev };
}

/**
 * After the studies: submission.csv, with a truth file the evaluation (score.json: the score beside the best
 * constant prediction, per-level dice) and index.html with it; prints the outputs and the summary line last.
 */
async function finish(o: InferOptions, done: Map<string, StudyResult>): Promise<Evaluation | undefined> {
  const ok = [...done.values()].filter((r) => r.ok && r.probabilities);
  const preds = new Map(ok.map((r) => [r.uid, r.probabilities!]));
  await writeSubmission(`${o.out}/submission.csv`, preds);
  let ev: Evaluation | undefined;
  if (o.truth && !preds.size) console.log(`infer: no study was predicted, nothing to score`);
  else if (o.truth) {
    const trainLabels = o.trainLabels ?? await findTrainLabels(o.weights);
    const dice = new Map(ok.filter((r) => r.dice).map((r) => [r.uid, r.dice!]));
    ev = await evaluate({ preds, truth: o.truth, trainLabels, dice });
    const json = {
      ...ev.score,
      constant: ev.constant,
      ratio: ev.ratio,
      difference: ev.difference,
      dice: ev.dice,
    };
    await writeFileAtomic(
      `${o.out}/score.json`,
      new TextEncoder().encode(JSON.stringify(json, null, 2) + "\n"),
    );
  }
  if (o.report) await writeIndex(o, done, ev);
  for (const r of ok) if (r.maskError) console.log(`infer: ${r.uid}: no dice, ${r.maskError}`);
  console.log(
    `infer: ${ok.length} studies -> ${o.out}/submission.csv, predictions.jsonl` +
      (o.report ? `, index.html and <uid>/report.html` : "") + (o.nifti ? `, <uid>/vertebrae.nii.gz` : "") +
      (ev ? `, score.json` : ""),
  );
  if (ev) {
    console.log(`infer: baseline: ${ev.constant.source}`);
    console.log(`infer: ${ev.score.studies} studies: ${summaryLine(ev)}`);
  }
  return ev;
}

/** index.html over every study, with the truth and dice of each when known. */
async function writeIndex(o: InferOptions, done: Map<string, StudyResult>, ev?: Evaluation): Promise<void> {
  const truth = ev && o.truth
    ? new Map((await readTrainCsv(o.truth)).map((r) => [r.uid, r.labels]))
    : new Map<string, number[]>();
  const rows = [...done.values()].map((r) => ({
    uid: r.uid,
    ok: r.ok,
    error: r.error,
    probabilities: r.probabilities ?? null,
    reportPath: r.ok ? `${r.uid}/report.html` : undefined,
    truth: truth.get(r.uid) ?? null,
    dice: r.dice ?? null,
  }));
  await writeFileAtomic(`${o.out}/index.html`, new TextEncoder().encode(indexHtml(rows, ev)), "index");
}

/**
 * One study's prediction, the device part of `deno task infer` without files: segment the [::2] x 256 x 256
 * cube (the ensemble of `seg`), compute the metadata, classify the crops (`cls`, mean over members).
 * `lap(step)` is called after "segment", "metadata", and per classifier member after "crops" and "classify"
 * (for timings).
 */
export async function predictStudy(
  study: InMemoryStudy,
  models: { seg: Member[]; cls: Member[]; segSize?: number },
  o: SegmentOptions & { tta: "none" | "flip"; stacks?: CropStacks },
  lap: (step: string) => void = () => {},
): Promise<StudyPrediction> {
  const labels = await segmentStudy(study, models, o);
  lap("segment");
  return await finishStudy(study, labels, models, o, lap);
}

/** What {@link predictStudy} gives: the labels on the [::2] x 256 x 256 grid, their metadata, the classes. */
export type StudyPrediction =
  & { labels: Uint8Array; shape: [number, number, number]; meta: StudyMeta }
  & Awaited<ReturnType<typeof classifyStudy>>;

/** How {@link segmentStudy} segments: the z window and overlap, and the post-processing (default "largest"). */
export interface SegmentOptions {
  window: number;
  overlap: number;
  postprocess?: SegPostprocess;
}

/**
 * The segmentation of {@link predictStudy}: labels [ceil(Z / 2), 256, 256] of the `seg` ensemble, cleaned
 * by `o.postprocess`.
 */
export async function segmentStudy(
  study: InMemoryStudy,
  models: { seg: Member[]; segSize?: number },
  o: SegmentOptions,
): Promise<Uint8Array> {
  const h = study.header;
  const [Z] = h.cubes.image_256!;
  const z2 = Math.ceil(Z / 2), n = 256 * 256;
  const sub = new Float32Array(z2 * n);
  for (let k = 0; k < z2; k++) {
    const s = study.image_256.subarray(2 * k * n, (2 * k + 1) * n);
    for (let i = 0; i < n; i++) sub[k * n + i] = s[i];
  }
  const pred = await predictVolume(models.seg.map((m) => m.model as never), {
    data: sub,
    shape: [z2, 256, 256],
  }, {
    mean: h.mean2,
    std: h.std2,
    window: o.window,
    overlap: o.overlap,
    padMultiple: 32,
    size: models.segSize ?? models.seg[0].config.size ?? 256,
  });
  return postprocessLabels(pred.labels, pred.shape, o.postprocess ?? DEFAULT_POSTPROCESS);
}

/** The rest of {@link predictStudy} after segmenting: metadata ("metadata"), crops and classification. */
async function finishStudy(
  study: InMemoryStudy,
  labels: Uint8Array,
  models: { cls: Member[] },
  o: { tta: "none" | "flip"; stacks?: CropStacks },
  lap: (step: string) => void,
): Promise<StudyPrediction> {
  const h = study.header, z2 = Math.ceil(h.cubes.image_256![0] / 2);
  const meta = computeMeta(labels, [z2, 256, 256], { mean: h.mean, std: h.std });
  lap("metadata");
  const r = await classifyStudy(models.cls, study, labels, meta, o.tta, lap, o.stacks);
  return { labels, shape: [z2, 256, 256], meta, ...r };
}

/** A study after the device work: its prediction and the seconds each step took so far. */
interface Predicted {
  study: InMemoryStudy;
  prediction: StudyPrediction;
  t: Record<string, number>;
  lap: (step: string) => void;
}

/** A study's step times: `lap(step)` adds the seconds since the last lap (or `restart()`) to `t[step]`. */
function stepTimer() {
  const t: Record<string, number> = {};
  let t0 = performance.now();
  return {
    t,
    restart: () => void (t0 = performance.now()),
    // A step may lap more than once (crops and classify per classifier member): its times add up.
    lap: (k: string) => {
      const now = performance.now();
      t[k] = (t[k] ?? 0) + (now - t0) / 1000;
      t0 = now;
    },
  };
}

/** A study after its segmentation. */
interface Segmented {
  study: InMemoryStudy;
  labels: Uint8Array;
  timer: ReturnType<typeof stepTimer>;
}

/** The inference's models and options, as the phases of a study need them. */
interface PhaseContext {
  seg: Member[];
  cls: Member[];
  segSize: number;
  o: InferOptions;
  stacks: CropStacks;
}

/** The first device part of a study: wait for its reading, segment it. */
async function segmentPhase(loading: Promise<InMemoryStudy>, c: PhaseContext): Promise<Segmented> {
  const timer = stepTimer();
  const study = await loading;
  timer.lap("read+preprocess (waited)");
  const labels = await segmentStudy(study, c, c.o);
  timer.lap("segment");
  return { study, labels, timer };
}

/**
 * The rest of a study: metadata, crops, classification, timed from this phase's start (the host's turn may
 * come well after the device finished the segmentation).
 */
async function classifyPhase(s: Segmented, c: PhaseContext): Promise<Predicted> {
  s.timer.restart();
  const prediction = await finishStudy(s.study, s.labels, c, { ...c.o, stacks: c.stacks }, s.timer.lap);
  return { study: s.study, prediction, t: s.timer.t, lap: s.timer.lap };
}

/**
 * The files of a study (NIfTI, report) and its dice against a truth mask, written by `writer` (a Worker)
 * beside the next studies' device work. The report's pictures of the crops are taken here, so the crop
 * stack goes back to the pool at once and the Worker gets a few KiB, not 31 MB a crop; the study's images
 * and labels are handed over to the Worker (no longer used here).
 */
async function writePhase(
  ref: StudyRef,
  p: Predicted,
  o: InferOptions,
  writer: StudyWriter,
): Promise<StudyResult> {
  const { study, t, lap } = p;
  const { labels, meta, release, crops, probabilities } = p.prediction;
  const views: ReportCrop[] = o.report
    ? crops.map((c) => ({
      vertebra: c.vertebra,
      crop: null,
      view: c.crop ? cropSlice(c.crop, c.shape ?? [], `crop of C${c.vertebra}`) : null,
    }))
    : [];
  release();
  const timings = Object.fromEntries(Object.entries(t).map(([k, v]) => [k, v * 1000]));
  const written = await writer.write({
    ref,
    out: o.out,
    nifti: o.nifti,
    report: o.report,
    masks: o.masks,
    study,
    labels,
    meta,
    probabilities,
    crops: views,
    timings,
  });
  lap("write");
  const vertebrae: StudyResult["vertebrae"] = {};
  for (const [k, [box, area]] of Object.entries(meta.boxes)) vertebrae[k] = { box, voxels: area };
  return { uid: ref.uid, ok: true, probabilities, vertebrae, timings: t, ...written };
}
