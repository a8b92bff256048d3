/**
 * @file The training stages as functions (the command line in train/cli.ts and `train all` call them):
 * segmentation, mask prediction, classifier, averaging, calibration. Each takes resolved flags and prints
 * where its outputs went.
 */
import { type Device, openDevice } from "../mod.ts";
import { nn } from "../mod.ts";
import type { Flags } from "../cli/flags.ts";
import { UsageError } from "../cli/flags.ts";
import { RunFolder } from "./run_folder.ts";
import { train, type TrainerOptions, type TrainResult, type TrainTask } from "./trainer.ts";
import type { ClsStudy } from "../infer/crops.ts";
import {
  CLS_PLAIN,
  CLS_SEED,
  CLS_TINY,
  CLS_TINY_PLAIN,
  type ClsConfig,
  SEG_PRESETS,
  type SegConfig,
} from "./presets.ts";
import { buildSegModel, segFolds, segModelConfig, segStudies, segTask, segValidationDice } from "./seg.ts";
import { buildClsModel, clsFolds, clsModelConfig, clsStudies, clsTask } from "./cls.ts";
import { initFrom, loadModel, resolveWeights } from "../infer/load.ts";
import { predictDataset } from "../infer/predict_dataset.ts";
import { DEFAULT_POSTPROCESS } from "../infer/meta.ts";
import { ensureCache } from "./dataset.ts";
import { listCached } from "../data/cache.ts";
import { duration } from "../cli/progress.ts";
import { averageCheckpoints } from "./average.ts";
import { writeFileAtomic } from "../io/files.ts";
import { calibrateCheckpoint, type CalibrationResult } from "./calibrate.ts";
import { expandWeights } from "../infer/ensemble.ts";
import { underMpirun } from "../parallel/mpi.ts";
import { launchRanks, parseDevices } from "../parallel/launch.ts";
import { openWorld, type World } from "../parallel/world.ts";
import { Interrupted } from "./trainer.ts";

function positive(c: Record<string, unknown>, keys: string[]): void {
  for (const k of keys) {
    const v = c[k] as number;
    if (!Number.isInteger(v) || v < 1) throw new UsageError(`--${k} must be a positive integer, got ${v}`);
  }
}

/** The checks every stage configuration passes after the flags' overrides (usage errors naming the flag). */
function checkCounts(c: SegConfig | ClsConfig): void {
  positive(c as unknown as Record<string, unknown>, ["epochs", "batch", "multiplier"]);
  if (!(c.lr > 0)) throw new UsageError(`--lr must be positive`);
  if (!(Number.isInteger(c.warmup) && c.warmup >= 0)) {
    throw new UsageError(`--warmup must be an integer >= 0`);
  }
}

/** The segmentation configuration: the preset with the flags' overrides. */
export function segConfig(f: Flags): SegConfig {
  const base = SEG_PRESETS[f.preset as string];
  if (!base) throw new UsageError(`--preset must be one of ${Object.keys(SEG_PRESETS).join(", ")}`);
  const c = { ...base };
  if (f.fold !== undefined) c.fold = f.fold as number;
  if (f.epochs !== undefined) c.epochs = f.epochs as number;
  if (f.batch !== undefined) c.batch = f.batch as number;
  if (f.lr !== undefined) c.lr = f.lr as number;
  if (f.multiplier !== undefined) c.multiplier = f.multiplier as number;
  if (f.warmup !== undefined) c.warmup = f.warmup as number;
  if (f["no-augment"]) c.augment = false;
  checkCounts(c);
  return c;
}

/** The classifier configuration: preset x encoder kind, with the flags' overrides. */
export function clsConfig(f: Flags): ClsConfig {
  const enc = (f.encoder as string | undefined) ?? (f.preset === "seed" ? "r152ir" : CLS_TINY.encoder);
  const m = /^r(26|50|101|152)(ir|ip)$/.exec(enc);
  if (!m && enc !== "plain") {
    throw new UsageError(
      `--encoder must look like r152ir, r152ip, r50ir, r26ir, ..., or be plain (got "${enc}")`,
    );
  }
  const kind = m?.[2] as "ir" | "ip" | undefined;
  let base: ClsConfig;
  if (f.preset === "seed") base = CLS_SEED[kind ?? "ir"];
  else if (f.preset === "tiny") base = kind === "ip" ? { ...CLS_TINY, multiplier: 2 } : CLS_TINY;
  else throw new UsageError(`--preset must be tiny or seed`);
  if (enc === "plain") base = f.preset === "tiny" ? CLS_TINY_PLAIN : { ...base, ...CLS_PLAIN };
  const c: ClsConfig = { ...base, encoder: enc };
  if (f.crop !== undefined) {
    const p = String(f.crop).split(",").map(Number);
    if (p.length !== 3 || p.some((v) => !Number.isInteger(v) || v < 1) || p[1] !== p[2] || p[1] % 32) {
      throw new UsageError(
        `--crop must be D,H,W with H = W a multiple of 32 (seed: 40,256,256), got ${f.crop}`,
      );
    }
    c.crop = [p[0], p[1]];
  }
  for (const k of ["fold", "epochs", "batch", "lr", "multiplier", "warmup"] as const) {
    if (f[k] !== undefined) (c as unknown as Record<string, unknown>)[k] = f[k];
  }
  if (f["seed-val-bug"]) c.seedValBug = true;
  if (f["seed-visibility"]) c.seedVisibility = true;
  checkCounts(c);
  return c;
}

function harness(f: Flags, c: SegConfig | ClsConfig, config: Record<string, unknown>): TrainerOptions {
  return {
    epochs: c.epochs,
    batch: c.batch,
    lr: c.lr,
    etaMin: c.etaMin,
    warmup: c.warmup,
    weightDecay: c.weightDecay,
    clip: c.clip,
    maxSteps: f["max-steps"] as number,
    seed: f.seed as number,
    keep: f.keep as number,
    logEvery: f["log-every"] as number,
    saveEvery: f["save-every"] as number,
    workers: f.workers as number,
    prefetch: f.prefetch as number,
    resume: f.resume as boolean,
    config,
    amp: !!f.amp,
  };
}

/** Flags back to a command line (for the ranks `--devices N` starts). */
function flagsToArgs(f: Flags): string[] {
  const out: string[] = [];
  for (const [k, v] of Object.entries(f)) {
    if (v === undefined || v === false || k === "help") continue;
    out.push(v === true ? `--${k}` : `--${k}=${v}`);
  }
  return out;
}

/** `--sync-bn` / `--no-sync-bn`; undefined: the default (on with several devices). */
function syncBNFlag(f: Flags): boolean | undefined {
  if (f["no-sync-bn"]) return false;
  return f["sync-bn"] === undefined ? undefined : !!f["sync-bn"];
}

/**
 * Data parallelism for a training stage. Outside mpirun with `--devices N > 1`: prepares the cache once,
 * re-runs this stage as N local ranks under `mpirun -n N` and returns null (the ranks did the work; a dead
 * replica is an error naming it and its adapter). Otherwise runs `body` in this process's world (a world
 * of one without mpirun; under mpirun every rank runs it, rank 0 writing the run folder).
 */
async function withDevices<T>(
  stage: string,
  f: Flags,
  out: string,
  body: (w: World | null) => Promise<T>,
): Promise<T | null> {
  const n = parseDevices(f.devices as string | undefined);
  if (!underMpirun()) {
    if (n <= 1) return await body(null);
    await ensureCache(f); // once, before the ranks read it
    const cli = new URL("./cli.ts", import.meta.url).pathname;
    const t0 = performance.now();
    const r = await launchRanks(n, [Deno.execPath(), "run", "-A", cli, stage, ...flagsToArgs(f)]);
    if (r.code !== 0) {
      const after = duration((performance.now() - t0) / 1000);
      if (!r.failure) {
        throw new Error(`${stage} on ${n} devices: a replica failed after ${after} (its error is above)`);
      }
      throw new Error(
        `${stage} on ${n} devices: ${r.failure}; the job was stopped after ${after}. The last checkpoint ` +
          `in ${out} is intact: continue with --resume (with any --devices)`,
      );
    }
    return null;
  }
  const w = await openWorld({
    devices: f.devices === undefined ? undefined : n,
    syncBN: syncBNFlag(f),
  });
  try {
    if (w.lead) { for (const line of w.placement) console.log(`devices: ${line}`); }
    const v = await body(w);
    await w.close();
    return v;
  } catch (e) {
    if (e instanceof Interrupted) throw e; // every replica stops at the same step
    // One replica's error: name it, and end the job now (its peers may be waiting in a collective).
    console.error(
      `train ${stage}: replica ${w.rank} (${w.device.info.description}): error: ${(e as Error).message}`,
    );
    w.replicas!.mpi.abort(1);
    throw e;
  } finally {
    w.device.destroy();
  }
}

/** Opens the run folder: rank 0 first (it writes config.json), the other replicas after it, read-only in effect. */
async function openRun(out: string, config: Record<string, unknown>, f: Flags, w: World | null) {
  if (!w || w.size === 1) return await RunFolder.open(out, config, f.resume as boolean);
  let run: RunFolder | null = null;
  if (w.lead) run = await RunFolder.open(out, config, f.resume as boolean);
  await w.barrier();
  // config.json now holds this configuration: opening it "to resume" only checks it (and rewrites it as is).
  if (!w.lead) run = await RunFolder.open(out, config, true);
  return run!;
}

function report(stage: string, r: TrainResult, f: Flags, run: RunFolder, metric: string): void {
  const best = r.best
    ? `best ${metric} ${r.best.value.toFixed(4)} (epoch ${r.best.epoch})`
    : "no validation yet";
  console.log(
    `${stage}: ${r.steps} steps in ${duration(r.seconds)}, data wait ${
      (100 * r.dataWaitShare).toFixed(1)
    }%, ${best}${r.stoppedAtMaxSteps ? ` (stopped at --max-steps ${f["max-steps"]})` : ""}`,
  );
  console.log(`run folder: ${run.dir} (best.safetensors, last.safetensors, log.jsonl, curves.svg)`);
}

/** `train seg`: the segmentation stage. Returns the run folder. */
export async function runSeg(f: Flags): Promise<string> {
  const c = segConfig(f);
  await withDevices("seg", f, f.out as string, (w) => segBody(f, c, w));
  return f.out as string;
}

async function segBody(f: Flags, c: SegConfig, w: World | null): Promise<void> {
  const { cache, data } = await ensureCache(f);
  const studies = await segStudies(cache);
  if (!studies.length) throw new Error(`${cache}: no study with a segmentation mask in the cache`);
  const folds = await segFolds(cache, studies, c.folds);
  const val = studies.filter((s) => folds.get(s.uid) === c.fold);
  const tr = studies.filter((s) => folds.get(s.uid) !== c.fold);
  if (!val.length) throw new Error(`${cache}/seg_folds.csv: fold ${c.fold} has no studies`);
  if (!tr.length) throw new Error(`${cache}/seg_folds.csv: no training studies outside fold ${c.fold}`);
  await trainStage(f, c, w, {
    stage: "seg",
    metric: "dice",
    out: f.out as string,
    config: stageConfig("seg", f, data, cache, {}, c, segModelConfig(c)),
    describe:
      `seg: ${tr.length} training studies x ${c.multiplier}, ${val.length} validation (fold ${c.fold}); ` +
      `${c.encoder} width ${c.baseChannels} on ${c.slices}x${c.size}x${c.size}, batch ${c.batch}, ` +
      `${c.epochs} epochs`,
    build: (device) => buildSegModel(device, c),
    task: (device, model) => segTask({ device, model, cache, train: tr, val, config: c }),
  });
}

/** The run configuration stored in config.json (key order as it always was: resumes compare it). */
function stageConfig(
  stage: string,
  f: Flags,
  data: string | null,
  cache: string,
  extra: Record<string, unknown>,
  c: SegConfig | ClsConfig,
  model: unknown,
): Record<string, unknown> {
  return {
    stage,
    preset: f.preset,
    data,
    cache,
    ...extra,
    seed: f.seed as number,
    ...c,
    model,
    init: f.init ?? null,
    "max-steps": f["max-steps"],
    ...(f.amp ? { amp: true } : {}),
  };
}

/** What differs between the seg and cls stages once their studies are split. */
interface StageSpec<M extends nn.Module> {
  stage: "seg" | "cls";
  metric: string;
  out: string;
  config: Record<string, unknown>;
  /** The header line, without the device. */
  describe: string;
  build: (device: Device) => M;
  task: (device: Device, model: M) => TrainTask<any>;
}

/**
 * The common tail of the seg and cls stages: the device (the world's with replicas), the model (seeded, --init,
 * replica 0's weights everywhere), the run folder, training, and the report (replica 0 only).
 */
async function trainStage<M extends nn.Module>(
  f: Flags,
  c: SegConfig | ClsConfig,
  w: World | null,
  s: StageSpec<M>,
): Promise<void> {
  const device = w?.device ?? await openDevice();
  if (!w || w.lead) console.log(`${s.describe}; ${devicesText(device, w)}`);
  nn.seedInit(f.seed as number);
  const model = s.build(device);
  try {
    if (f.init && !f.resume) await init(model, f.init as string, device);
    await joinReplicas(model, w);
    const run = await openRun(s.out, s.config, f, w);
    const r = await train(s.task(device, model), run, { ...harness(f, c, s.config), replicas: w?.replicas });
    if (!w || w.lead) report(s.stage, r, f, run, s.metric);
  } finally {
    model.dispose();
    if (!w) device.destroy();
  }
}

function devicesText(device: { info: { description: string } }, w: World | null): string {
  if (!w || w.size === 1) return `device ${device.info.description}`;
  const bn = w.replicas!.syncBN ? "SyncBN" : "batch norm per replica";
  return `${w.size} devices (data parallel, ${bn}; global batch split over them)`;
}

/** Replica 0's initial weights everywhere, and SyncBN when on. */
async function joinReplicas(model: nn.Module, w: World | null): Promise<void> {
  if (!w?.replicas || w.size === 1) return;
  w.replicas.convertSyncBatchNorm(model);
  await w.replicas.broadcastState(model);
}

async function init(model: nn.Module, path: string, device: Device) {
  const r = await initFrom(model, path, device);
  if (r.loaded === 0) {
    throw new Error(
      `${path}: no tensor of this checkpoint fits the model (${r.skipped.slice(0, 3).join("; ")})`,
    );
  }
  console.log(
    `init ${path}: ${r.loaded} tensors loaded, ${r.skipped.length} skipped${
      r.skipped.length ? ` (${r.skipped.slice(0, 5).join("; ")}${r.skipped.length > 5 ? "; ..." : ""})` : ""
    }, ${r.missing.length} model tensors not in the file`,
  );
}

/** `train predict-seg`: masks and metadata for every cached study. */
export async function runPredictSeg(f: Flags): Promise<void> {
  if (!f.weights) {
    throw new UsageError("--weights is required (a seg run folder or checkpoint, comma-separated)");
  }
  const { cache } = await ensureCache(f);
  const device = await openDevice();
  const specs = (f.weights as string).split(",").filter(Boolean);
  const loaded = [];
  try {
    for (const s of specs) loaded.push(await loadModel(s, device));
    for (const l of loaded) {
      if (l.config.model !== "CSNUNet") throw new Error(`${l.path}: not a segmentor (${l.config.model})`);
    }
    const sizes = new Set(loaded.map((l) => l.config.size ?? 256));
    if (sizes.size > 1) throw new Error(`--weights: models trained at different sizes (${[...sizes]})`);
    const uids = await listCached(cache);
    const t0 = performance.now();
    const r = await predictDataset({
      cache,
      uids,
      models: loaded.map((l) => l.model as never),
      size: [...sizes][0],
      window: f.window as number,
      overlap: f.overlap as number,
      weights: loaded.map((l) => l.path),
      postprocess: f["all-components"] ? "none" : DEFAULT_POSTPROCESS,
      force: f.force as boolean,
      onStudy: (p) => {
        const rate = (performance.now() - t0) / 1000 / p.done;
        console.log(
          `predict-seg ${p.done}/${p.total} ${p.uid}${p.skipped ? " (already predicted)" : ""} ` +
            `(${rate.toFixed(1)} s/study, ETA ${duration(rate * (p.total - p.done))})`,
        );
      },
    });
    console.log(
      `predict-seg: ${r.predicted.length} studies predicted, ${r.skipped.length} already done; ` +
        `masks and metadata in ${cache}/<uid>/ (seg_pred.raw, seg_meta.json)`,
    );
  } finally {
    for (const l of loaded) l.model.dispose();
    device.destroy();
  }
}

/** `train cls`: one classifier (encoder x fold). Returns the run folder. */
export async function runCls(f: Flags): Promise<string> {
  const c = clsConfig(f);
  const out = clsOut(f, c);
  await withDevices("cls", f, out, (w) => clsBody(f, c, w));
  return out;
}

async function clsBody(f: Flags, c: ClsConfig, w: World | null): Promise<void> {
  const { cache, data } = await ensureCache(f);
  const csv = (f.labels as string | undefined) ?? (data ? `${data}/train.csv` : undefined);
  if (!csv) throw new UsageError("--labels train.csv is needed when only --cache is given");
  const boxes = (f.boxes as string | undefined) ?? (data ? `${data}/train_bounding_boxes.csv` : undefined);
  const withBoxes = (c.fractureWeight ?? 0) > 0 && boxes && await exists(boxes) ? boxes : undefined;
  const { studies, noPrediction } = await clsStudies(cache, csv, withBoxes);
  if (noPrediction.length) {
    throw new Error(
      `${cache}: ${noPrediction.length} studies have no predicted mask (e.g. ${noPrediction[0]}); run ` +
        `'deno task train predict-seg --cache ${cache} --weights SEG_RUN' first`,
    );
  }
  if (!studies.length) throw new Error(`${cache}: no study with labels in ${csv}`);
  const foldsPath = (f.folds as string | undefined) ?? `${cache}/folds.csv`;
  const folds = await clsFolds(foldsPath, studies, c.folds);
  const val = studies.filter((s) => folds.get(s.uid) === c.fold);
  const tr = studies.filter((s) => folds.get(s.uid) !== c.fold);
  if (!val.length) throw new Error(`${foldsPath}: fold ${c.fold} has no studies`);
  if (!tr.length) throw new Error(`${foldsPath}: no training studies outside fold ${c.fold}`);
  const pos = tr.filter((s) => s.labels[0]).length;
  await trainStage(f, c, w, {
    stage: "cls",
    metric: "loss",
    out: clsOut(f, c),
    config: stageConfig(
      "cls",
      f,
      data,
      cache,
      { labels: csv, foldsFile: foldsPath, ...(withBoxes ? { boxes: withBoxes } : {}) },
      c,
      clsModelConfig(c),
    ),
    describe: `cls: ${tr.length} training studies (${pos} positive) x ${c.multiplier}, ${val.length} ` +
      `validation (fold ${c.fold}); ${describeCls(c)} on 3x${c.crop[0]}x${c.crop[1]}x${
        c.crop[1]
      }, batch ${c.batch}, ` +
      `${c.epochs} epochs${fractureNote(c, tr, withBoxes)}`,
    build: (device) => buildClsModel(device, c),
    task: (device, model) => clsTask({ device, model, cache, train: tr, val, config: c }),
  });
}

function describeCls(c: ClsConfig): string {
  return c.encoder === "plain"
    ? `plain 3-D CNN ${(c.widths ?? [16, 32, 64, 64]).join(",")}`
    : `${c.encoder} width ${c.baseChannels}`;
}

/** What the fracture-map loss will see, for the run's first line. */
function fractureNote(c: ClsConfig, tr: ClsStudy[], boxes: string | undefined): string {
  if (!(c.fractureWeight ?? 0)) return "";
  if (!boxes) return "; no train_bounding_boxes.csv: no fracture-map loss";
  const known = tr.filter((s) => s.labels[0] && s.fractures).length;
  const pos = tr.filter((s) => s.labels[0]).length;
  return `; fracture-map loss (weight ${c.fractureWeight}) with the boxes of ${known} of ${pos} fractured studies`;
}

async function exists(path: string): Promise<boolean> {
  return await Deno.stat(path).then(() => true, () => false);
}

/** A classifier run's folder: --out, else out/cls-<encoder>-fold<k>. */
function clsOut(f: Flags, c: ClsConfig): string {
  return (f.out as string | undefined) ?? `out/cls-${c.encoder}-fold${c.fold}`;
}

/** `train average`: the seed's averaging of the best epochs of a classifier run. */
export async function runAverage(f: Flags): Promise<string> {
  if (!f.run) throw new UsageError("--run RUN is required");
  const r = await averageCheckpoints(f.run as string, f.best as number);
  console.log(
    `average: epochs ${r.epochs.join(", ")} (validation loss ${
      r.values.map((v) => v.toFixed(4)).join(", ")
    }) -> ${r.path}`,
  );
  return r.path;
}

/** Marks a run folder's stage as finished (what `train all` skips on a rerun). */
async function markDone(dir: string, what: Record<string, unknown>): Promise<void> {
  const text = JSON.stringify({ finished: new Date().toISOString(), ...what }) + "\n";
  await writeFileAtomic(`${dir}/done.json`, new TextEncoder().encode(text), "done.json");
}

async function isDone(dir: string): Promise<boolean> {
  return await Deno.stat(`${dir}/done.json`).then(() => true, () => false);
}

async function hasRun(dir: string): Promise<boolean> {
  return await Deno.stat(`${dir}/config.json`).then(() => true, () => false);
}

/**
 * `train calibrate`: fits a classifier checkpoint's calibration on its run's validation fold and stores it
 * in the checkpoint (train/calibrate.ts); `--weights` defaults to the run's averaged checkpoint.
 */
export async function runCalibrate(f: Flags): Promise<CalibrationResult> {
  if (!f.run) throw new UsageError("--run RUN is required");
  const run = f.run as string;
  const weights = (f.weights as string | undefined) ?? await resolveWeights((await expandWeights(run))[0]);
  if (!/\.safetensors$/.test(weights)) {
    throw new UsageError(`${weights}: calibration is stored in a .safetensors checkpoint's metadata`);
  }
  const r = await calibrateCheckpoint(weights, run);
  console.log(`calibrate: ${calibrationSummary(r)} -> ${weights}`);
  return r;
}

/** The figures of a calibration as `train calibrate` and `train all` print them. */
function calibrationSummary(r: CalibrationResult): string {
  const c = r.calibration, ratio = (v: number) => (v / r.constant).toFixed(2);
  return `validation fold (${c.studies} studies): raw ${r.raw.toFixed(4)} (ratio ${
    ratio(r.raw)
  }), calibrated ` +
    `${r.calibrated.toFixed(4)} in-sample (${ratio(r.calibrated)}), ${r.leaveOneOut.toFixed(4)} leave-one-` +
    `study-out with the fitted slopes (${ratio(r.leaveOneOut)}) vs ${r.constant.toFixed(4)} for ` +
    `${r.constantFrom}; keeps ${kept(c.slope.overall, r.fitted.overall)} of the patient_overall logit, ` +
    `${kept(c.slope.vertebrae, r.fitted.vertebrae)} of the vertebrae's (0: the constant)`;
}

/** A stored slope, and the fitted one where leave-one-study-out dropped it. */
function kept(stored: number, fitted: number): string {
  return stored === fitted
    ? stored.toFixed(2)
    : `${stored.toFixed(2)} (fitted ${fitted.toFixed(2)}: no better than the constant out of sample)`;
}

/**
 * `train all`: preprocessing (when not cached), the segmentation stage, mask prediction for every study,
 * the classifier stage for each configured encoder x fold, and averaging. A finished stage is skipped on a
 * rerun; an unfinished one resumes.
 */
export async function runAll(f: Flags): Promise<void> {
  if (underMpirun()) {
    throw new UsageError("train all runs its stages itself: use --devices N rather than an external mpirun");
  }
  const out = f.out as string;
  const t0 = performance.now();
  const common = { data: f.data, cache: f.cache, workers: f.workers, seed: f.seed, preset: f.preset };
  const stageFlags = {
    ...common,
    keep: 5,
    "log-every": 10,
    "save-every": 1,
    prefetch: 2,
    "max-steps": 0,
    devices: f.devices,
    "sync-bn": f["sync-bn"],
    "no-sync-bn": f["no-sync-bn"],
    amp: f.amp,
  };
  const { cache, data } = await ensureCache(f);
  const segDir = `${out}/seg`;
  if (await isDone(segDir)) console.log(`all: segmentation done (${segDir}), skipped`);
  else {
    await runSeg({
      ...stageFlags,
      cache,
      data: data ?? undefined,
      out: segDir,
      resume: await hasRun(segDir),
    });
    await markDone(segDir, {});
  }
  await runPredictSeg({
    ...common,
    cache,
    data: undefined,
    weights: segDir,
    window: 384,
    overlap: 128,
    "all-components": f["all-components"] ?? false,
    force: false,
  });
  const encoders = String(f.encoders ?? (f.preset === "seed" ? "r152ir,r152ip" : CLS_TINY.encoder)).split(
    ",",
  );
  const foldList = String(f["cls-folds"] ?? (f.preset === "seed" ? "0,1,2,3" : "0")).split(",").map(Number);
  const results: string[] = [];
  for (const enc of encoders) {
    for (const fold of foldList) {
      const dir = `${out}/cls-${enc}-fold${fold}`;
      const cf = { ...stageFlags, cache, data: data ?? undefined, encoder: enc, fold, out: dir };
      const c = clsConfig(cf);
      if (await isDone(dir)) console.log(`all: classifier ${enc} fold ${fold} done (${dir}), skipped`);
      else {
        await runCls({ ...cf, labels: data ? `${data}/train.csv` : f.labels, resume: await hasRun(dir) });
        await markDone(dir, {});
      }
      const swa = await runAverage({ run: dir, best: Math.min(c.averageBest, c.epochs) });
      results.push(`${enc} fold ${fold}: averaged classifier -> ${swa}`);
      try {
        results.push(`    ${calibrationSummary(await runCalibrate({ run: dir, weights: swa }))}`);
      } catch (e) {
        // A fold too small to calibrate on leaves the raw classifier, which inference then uses as it is.
        console.log(`all: ${dir} not calibrated: ${(e as Error).message}`);
        results.push(`    not calibrated (${(e as Error).message}): inference uses its raw probabilities`);
      }
    }
  }
  console.log(
    `all: done in ${
      duration((performance.now() - t0) / 1000)
    }; competition metric on each classifier's validation fold (lower is better):`,
  );
  for (const r of results) console.log(`  ${r}`);
  console.log(`  ${await segDiceLine(segDir)}`);
}

/** The segmentor's per-level validation dice at its best epoch, as `train all` prints it last. */
async function segDiceLine(segDir: string): Promise<string> {
  const d = await segValidationDice(segDir);
  if (!d) return `segmentor ${segDir}: no validation epoch logged, so no dice`;
  return `segmentor ${segDir}/best.safetensors (epoch ${d.epoch} of ${d.epochs}): validation dice on seg ` +
    `fold ${d.fold} (${d.studies} studies) C1..C7 ${
      d.perLevel.map((v) => v === null ? "-" : v.toFixed(3)).join(" ")
    }, mean ${d.mean.toFixed(3)}`;
}
