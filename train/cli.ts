/**
 * `deno task train <stage> [flags]`: the training pipeline's command line.
 *
 *   seg          train the CSN-UNet segmentor (seed-pipeline.md 2) into a run folder
 *   predict-seg  predict vertebra masks + metadata for every cached study (seed stage 3)
 *
 * `deno task train <stage> --help` lists the stage's flags with their defaults. With no --data and no
 * --cache, the built-in phantoms are written (once) under out/phantoms and used.
 */
import { openDevice } from "../mod.ts";
import { nn } from "../mod.ts";
import { type Flags, type FlagSpec, parseFlags, usage, UsageError } from "./args.ts";
import { RunFolder } from "./run_folder.ts";
import { Interrupted, train } from "./trainer.ts";
import { SEG_PRESETS, type SegConfig } from "./presets.ts";
import { buildSegModel, segFolds, segModelConfig, segStudies, segTask } from "./seg.ts";
import { initFrom, loadModel } from "../infer/load.ts";
import { predictDataset } from "../infer/predict_dataset.ts";
import { ensureCache } from "./dataset.ts";
import { duration } from "./progress.ts";

const COMMON: Record<string, FlagSpec> = {
  data: {
    type: "string",
    help: "RSNA-layout dataset (train_images/, segmentations/, train.csv); default: phantoms",
  },
  cache: { type: "string", help: "preprocessing cache (default: out/cache/<dataset name>)" },
  workers: { type: "number", default: 2, help: "loader / preprocessing Workers" },
  seed: {
    type: "number",
    default: 0,
    help: "seed of everything random (init, order, augmentation, dropout)",
  },
};

const SEG_FLAGS: Record<string, FlagSpec> = {
  ...COMMON,
  out: { type: "string", default: "out/seg", help: "run folder" },
  preset: {
    type: "string",
    default: "tiny",
    help: "tiny (CPU-sized) or seed (the solution's configuration)",
  },
  fold: { type: "number", help: "validation fold of seg_folds.csv (preset: seed 1, tiny 1)" },
  epochs: { type: "number", help: "epochs (preset)" },
  batch: { type: "number", help: "batch size (preset)" },
  lr: { type: "number", help: "peak learning rate (preset)" },
  multiplier: { type: "number", help: "times the train list is repeated per epoch (preset)" },
  "max-steps": {
    type: "number",
    default: 0,
    help: "stop after N optimizer steps in total, resumed ones included",
  },
  init: { type: "string", help: "initial weights (.pth from mmaction2 or .safetensors): fitting keys load" },
  resume: { type: "boolean", default: false, help: "continue the run in --out where it stopped" },
  keep: { type: "number", default: 5, help: "per-epoch checkpoints kept (the best by validation dice)" },
  "log-every": { type: "number", default: 10, help: "log and print every N steps" },
  "save-every": { type: "number", default: 1, help: "save resume state every N steps (and each epoch end)" },
  prefetch: { type: "number", default: 2, help: "batches prepared ahead by the loader" },
  "no-augment": { type: "boolean", default: false, help: "turn the seed's augmentations off" },
};

const PREDICT_FLAGS: Record<string, FlagSpec> = {
  ...COMMON,
  weights: {
    type: "string",
    help: "segmentor run folder(s) or checkpoint(s), comma-separated (an ensemble)",
  },
  window: { type: "number", default: 384, help: "sliding window along z ([::2] slices)" },
  overlap: { type: "number", default: 128, help: "overlap of consecutive windows" },
  force: {
    type: "boolean",
    default: false,
    help: "predict again studies already predicted with these weights",
  },
};

const STAGES: Record<
  string,
  { help: string; flags: Record<string, FlagSpec>; run: (f: Flags) => Promise<void> }
> = {
  seg: { help: "train the CSN-UNet segmentor", flags: SEG_FLAGS, run: runSeg },
  "predict-seg": {
    help: "predict masks and metadata for every cached study",
    flags: PREDICT_FLAGS,
    run: runPredict,
  },
};

function segConfig(f: Flags): SegConfig {
  const base = SEG_PRESETS[f.preset as string];
  if (!base) throw new UsageError(`--preset must be one of ${Object.keys(SEG_PRESETS).join(", ")}`);
  const c = { ...base };
  if (f.fold !== undefined) c.fold = f.fold as number;
  if (f.epochs !== undefined) c.epochs = f.epochs as number;
  if (f.batch !== undefined) c.batch = f.batch as number;
  if (f.lr !== undefined) c.lr = f.lr as number;
  if (f.multiplier !== undefined) c.multiplier = f.multiplier as number;
  if (f["no-augment"]) c.augment = false;
  for (const k of ["epochs", "batch", "multiplier"] as const) {
    if (!Number.isInteger(c[k]) || c[k] < 1) throw new UsageError(`--${k} must be a positive integer`);
  }
  if (!(c.lr > 0)) throw new UsageError(`--lr must be positive`);
  return c;
}

async function runSeg(f: Flags): Promise<void> {
  const c = segConfig(f);
  const { cache, data } = await ensureCache(f);
  const studies = await segStudies(cache);
  if (!studies.length) throw new Error(`${cache}: no study with a segmentation mask in the cache`);
  const folds = await segFolds(cache, studies, c.folds);
  const val = studies.filter((s) => folds.get(s.uid) === c.fold);
  const tr = studies.filter((s) => folds.get(s.uid) !== c.fold);
  if (!val.length) throw new Error(`${cache}/seg_folds.csv: fold ${c.fold} has no studies`);
  if (!tr.length) throw new Error(`${cache}/seg_folds.csv: no training studies outside fold ${c.fold}`);
  const seed = f.seed as number;
  const config = {
    stage: "seg",
    preset: f.preset,
    data,
    cache,
    seed,
    ...c,
    model: segModelConfig(c),
    init: f.init ?? null,
    "max-steps": f["max-steps"],
  };
  const run = await RunFolder.open(f.out as string, config, f.resume as boolean);
  const device = await openDevice();
  console.log(
    `seg: ${tr.length} training studies x ${c.multiplier}, ${val.length} validation (fold ${c.fold}); ` +
      `${c.encoder} width ${c.baseChannels} on ${c.slices}x${c.size}x${c.size}, batch ${c.batch}, ` +
      `${c.epochs} epochs; device ${device.info.description}`,
  );
  nn.seedInit(seed);
  const model = buildSegModel(device, c);
  try {
    if (f.init && !f.resume) {
      const r = await initFrom(model, f.init as string, device);
      console.log(
        `init ${f.init}: ${r.loaded} tensors loaded, ${r.skipped.length} skipped${
          r.skipped.length
            ? ` (${r.skipped.slice(0, 5).join("; ")}${r.skipped.length > 5 ? "; ..." : ""})`
            : ""
        }, ${r.missing.length} model tensors not in the file`,
      );
    }
    const task = segTask({ device, model, cache, train: tr, val, config: c });
    const r = await train(task, run, {
      epochs: c.epochs,
      batch: c.batch,
      lr: c.lr,
      etaMin: c.etaMin,
      weightDecay: c.weightDecay,
      clip: c.clip,
      maxSteps: f["max-steps"] as number,
      seed,
      keep: f.keep as number,
      logEvery: f["log-every"] as number,
      saveEvery: f["save-every"] as number,
      workers: f.workers as number,
      prefetch: f.prefetch as number,
      resume: f.resume as boolean,
      config,
    });
    const best = r.best
      ? `best dice ${r.best.value.toFixed(4)} (epoch ${r.best.epoch})`
      : "no validation yet";
    console.log(
      `seg: ${r.steps} steps in ${duration(r.seconds)}, data wait ${
        (100 * r.dataWaitShare).toFixed(1)
      }%, ${best}${r.stoppedAtMaxSteps ? ` (stopped at --max-steps ${f["max-steps"]})` : ""}`,
    );
    console.log(`run folder: ${run.dir} (best.safetensors, last.safetensors, log.jsonl, curves.svg)`);
  } finally {
    model.dispose();
    device.destroy();
  }
}

async function runPredict(f: Flags): Promise<void> {
  if (!f.weights) {
    throw new UsageError("--weights is required (a seg run folder or checkpoint, comma-separated)");
  }
  const { cache } = await ensureCache(f);
  const device = await openDevice();
  const specs = (f.weights as string).split(",").filter(Boolean);
  const loaded = [];
  try {
    for (const s of specs) loaded.push(await loadModel(s, device));
    const sizes = new Set(loaded.map((l) => l.config.size ?? 256));
    if (sizes.size > 1) throw new Error(`--weights: models trained at different sizes (${[...sizes]})`);
    for (const l of loaded) {
      if (l.config.model !== "CSNUNet") throw new Error(`${l.path}: not a segmentor (${l.config.model})`);
    }
    const headers = await Array.fromAsync(Deno.readDir(cache));
    const uids = headers.filter((e) => e.isDirectory && !e.name.endsWith(".partial")).map((e) => e.name)
      .sort();
    const r = await predictDataset({
      cache,
      uids,
      models: loaded.map((l) => l.model as never),
      size: [...sizes][0],
      window: f.window as number,
      overlap: f.overlap as number,
      weights: loaded.map((l) => l.path),
      force: f.force as boolean,
      onStudy: (p) => {
        const rate = p.seconds / p.done;
        console.log(
          `predict-seg ${p.done}/${p.total} ${p.uid}${p.skipped ? " (already predicted)" : ""} ` +
            `(${rate.toFixed(1)} s/study, ETA ${duration(rate * (p.total - p.done))})`,
        );
      },
    });
    console.log(
      `predict-seg: masks and metadata in ${cache}/<uid>/ (seg_pred.raw, seg_meta.json); ${
        JSON.stringify(r)
      }`,
    );
  } finally {
    for (const l of loaded) l.model.dispose();
    device.destroy();
  }
}

if (import.meta.main) {
  const [stage, ...rest] = Deno.args;
  const st = STAGES[stage];
  if (!st) {
    console.log(
      `usage: deno task train <stage> [flags]\n\nstages:\n${
        Object.entries(STAGES).map(([k, s]) => `  ${k.padEnd(12)} ${s.help}`).join("\n")
      }\n\n'deno task train <stage> --help' lists a stage's flags.`,
    );
    Deno.exit(stage && stage !== "--help" ? 2 : 0);
  }
  let flags: Flags;
  try {
    flags = parseFlags(rest, st.flags);
  } catch (e) {
    console.error(`train ${stage}: ${(e as Error).message}`);
    Deno.exit(2);
  }
  if (flags.help) {
    console.log(usage(`deno task train ${stage}: ${st.help}`, st.flags));
    Deno.exit(0);
  }
  try {
    await st.run(flags);
  } catch (e) {
    if (e instanceof Interrupted) {
      console.error(`train ${stage}: ${e.message}`);
      Deno.exit(e.signal === "SIGTERM" ? 143 : 130);
    }
    console.error(`train ${stage}: ${e instanceof UsageError ? "" : "error: "}${(e as Error).message}`);
    Deno.exit(e instanceof UsageError ? 2 : 1);
  }
}
