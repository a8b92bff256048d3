/**
 * @file The training harness every stage shares: epochs of optimizer steps over a task's items, AdamW with
 * the seed's parameter groups (no weight decay for any parameter whose name contains "bias"), a per-step
 * cosine schedule with the seed's T_max rule, global gradient-norm clipping, validation every epoch, the run
 * folder (run_folder.ts) and exact resumption.
 *
 * Reproducibility by construction: the epoch order, each sample's augmentation draw and each step's dropout
 * seed are pure functions of (seed, epoch, position) or (seed, step), never of a generator's history. So a
 * resumed run needs only its counters, weights and optimizer moments to continue exactly where an
 * uninterrupted run would be.
 */
import { keep, type Tensor, tidy, type TuneDecision } from "../mod.ts";
import type { Module } from "../nn/module.ts";
import { AdamW } from "../optim/adamw.ts";
import { cosineSchedule } from "../optim/schedule.ts";
import { clipGradNorm } from "../optim/clip.ts";
import { GradScaler } from "../optim/grad_scaler.ts";
import { autocast, hasF16 } from "../kernels/cast.ts";
import { hash32, manualSeed, mulberry32 as rng } from "../core/random.ts";
import { readCheckpointHost } from "../io/files.ts";
import { upload } from "../io/host.ts";
import type { LogRecord, RunFolder } from "./run_folder.ts";
import { Prefetcher, WorkerPool } from "./loader.ts";
import type { SampleJob, SampleResult } from "./samples.ts";
import { duration, Progress } from "../cli/progress.ts";
import { curvesSvg } from "./curves.ts";
import type { Replicas } from "../parallel/replicas.ts";

/** What a stage provides to the harness. */
export interface TrainTask<S extends SampleResult = SampleResult> {
  /** Stage name for logs ("seg", "cls"). */
  name: string;
  model: Module;
  /** Items in one epoch (the train list times its multiplier). */
  items: number;
  /** The order of items in an epoch (default: a permutation), from a generator seeded by (seed, epoch). */
  order?(epoch: number, rnd: () => number): number[];
  /** The loader job of item `item` with its own generator (augmentation draws). */
  job(item: number, rnd: () => number): SampleJob;
  /** The loss of a batch (builds the device tensors; called inside a tidy scope). */
  loss(batch: S[]): Tensor;
  /** Validation metrics (the model is put in eval mode before and back in train mode after). */
  validate(progress: Progress): Promise<Record<string, number>>;
  /** The metric `best.safetensors` follows. */
  metric: { name: string; mode: "max" | "min" };
}

/** Harness options (the resolved flags). */
export interface TrainerOptions {
  epochs: number;
  batch: number;
  lr: number;
  /** Final learning rate of the cosine (seed: 1e-5). */
  etaMin: number;
  /** Linear warm-up steps; the cosine spans the remaining tMax - warmup steps (default 0: the seed's). */
  warmup?: number;
  weightDecay: number;
  /** Global gradient-norm limit (0: none). */
  clip: number;
  /** Stop after this many optimizer steps in total, counting resumed ones (0: no limit). */
  maxSteps: number;
  seed: number;
  /** Per-epoch checkpoints to keep (the best by the metric). */
  keep: number;
  /** Log (and print) every N steps. */
  logEvery: number;
  /** Save resume state + last.safetensors every N steps (and at every epoch end and stop). */
  saveEvery: number;
  workers: number;
  prefetch: number;
  resume: boolean;
  /** Configuration stored in checkpoint metadata. */
  config: Record<string, unknown>;
  /**
   * Data parallelism (parallel/): this process's replica. `batch` stays the global batch; each replica takes
   * its share of every global batch in the same global order, and only replica 0 logs, validates and saves.
   */
  replicas?: Replicas | null;
  /** AdamW's eps (default 1e-8, the seed's); a large one (1.0) makes the update SGD-like (tests). */
  adamEps?: number;
  /**
   * Mixed precision (`--amp`): convs and linears in f16 under `autocast` (kernels/cast.ts), with a
   * GradScaler on one device; with replicas only autocast (gradients are f32 here: see kernels/cast.ts). A
   * device without `shader-f16` trains in f32 with a warning.
   */
  amp?: boolean;
}

/** Thrown when SIGINT/SIGTERM stopped a run after saving; the CLI exits non-zero. */
export class Interrupted extends Error {
  constructor(readonly signal: string, readonly step: number) {
    super(`stopped by ${signal} after step ${step}; state saved, continue with --resume`);
  }
}

interface EpochRecord {
  epoch: number;
  step: number;
  metrics: Record<string, number>;
}

/** Summary of a finished (or stopped) run. */
export interface TrainResult {
  steps: number;
  epochs: EpochRecord[];
  best: { value: number; epoch: number } | null;
  stoppedAtMaxSteps: boolean;
  dataWaitShare: number;
  seconds: number;
}

/** AdamW with the seed's groups: weight decay on everything except parameters named "*bias*". */
export function seedAdamW(model: Module, lr: number, weightDecay: number, eps = 1e-8): AdamW {
  const named = model.namedParameters();
  return new AdamW([
    { params: named.filter(([k]) => !k.includes("bias")).map(([, p]) => p) },
    { params: named.filter(([k]) => k.includes("bias")).map(([, p]) => p), weightDecay: 0 },
  ], { lr, weightDecay, eps, betas: [0.9, 0.999] });
}

/** The seed's T_max: floor(epochs * items / (devices * batch)). */
export function seedTMax(epochs: number, items: number, globalBatch: number): number {
  return Math.floor((epochs * items) / globalBatch);
}

/** Trains `task` into `run`; resumes from `run` when `o.resume`. */
export async function train<S extends SampleResult>(
  task: TrainTask<S>,
  run: RunFolder,
  o: TrainerOptions,
): Promise<TrainResult> {
  const model = task.model;
  const R = o.replicas && o.replicas.world > 1 ? o.replicas : null;
  const world = R?.world ?? 1, rank = R?.rank ?? 0, lead = rank === 0;
  if (o.batch % world) {
    throw new Error(`${task.name}: the global batch ${o.batch} does not split over ${world} devices`);
  }
  const perReplica = o.batch / world;
  const stepsPerEpoch = Math.floor(task.items / o.batch);
  if (stepsPerEpoch < 1) {
    throw new Error(`${task.name}: ${task.items} training items do not fill one batch of ${o.batch}`);
  }
  const tMax = Math.max(1, seedTMax(o.epochs, task.items, o.batch));
  const warmup = Math.min(o.warmup ?? 0, tMax - 1);
  const sched = cosineSchedule({
    lrMax: o.lr,
    etaMin: o.etaMin,
    totalSteps: Math.max(1, tMax - warmup),
    warmup,
  });
  const opt = seedAdamW(model, o.lr, o.weightDecay, o.adamEps);
  const params = model.parameters();
  const half = !!o.amp && hasF16(params[0].device);
  if (o.amp && !half) {
    console.warn(`--amp: "${params[0].device.info.label}" has no shader-f16; training in f32`);
  }
  const scaler = half && !R ? new GradScaler() : null;
  const amp = <T>(fn: () => T): T => half ? autocast(fn) : fn();
  // After backward, whichever path made the gradients: global clipping, then AdamW.
  const update = () => {
    if (o.clip > 0) clipGradNorm(params, o.clip).dispose();
    opt.step();
  };
  // Under mpirun stdout is a pseudo-terminal that the launcher pipes on: plain lines, not a redrawn one.
  const progress = lead ? new Progress(o.logEvery, R ? false : undefined) : quietProgress();
  let step = 0, epoch = 0, inEpoch = 0;
  let best: { value: number; epoch: number } | null = null;
  let epochs: EpochRecord[] = [];

  if (o.resume && await run.has("resume.safetensors")) {
    const st = await loadResume(run, model, opt);
    ({ step, epoch, inEpoch, best, epochs } = st);
    if (scaler && st.scaler) scaler.loadStateDict(st.scaler);
    // Under CSN_BENCHMARK=1 the kernel variants the run chose before (they decide the results' last bits).
    if (st.tuning) params[0].device.tuner?.load(st.tuning);
    if (lead) await run.truncateLog(step, epoch);
    progress.log(
      `resuming ${run.dir} at step ${step} (epoch ${epoch + 1}, batch ${inEpoch}/${stepsPerEpoch})`,
    );
  }

  let stop: string | null = null;
  // With replicas: the stop every replica agreed on (some replica's signal, carried by a step).
  let agreedStop: string | null = null;
  const onSignal = (sig: Deno.Signal) => () => {
    if (stop) return;
    stop = sig;
    progress.log(`${sig}: finishing the current step, then saving`);
  };
  const handlers: [Deno.Signal, () => void][] = (["SIGINT", "SIGTERM"] as Deno.Signal[]).map((
    s,
  ) => [s, onSignal(s)]);
  for (const [s, h] of handlers) Deno.addSignalListener(s, h);

  const pool = new WorkerPool(o.workers);
  const meta = () => ({ step, epoch, inEpoch, best, epochs, config: o.config });
  const save = async () => {
    if (!lead) return;
    const sd: Record<string, Tensor> = {};
    for (const [k, t] of Object.entries(model.stateDict())) sd[`model.${k}`] = t;
    const s = opt.stateDict();
    s.m.forEach((t, i) => (sd[`optim.m.${i}`] = t));
    s.v.forEach((t, i) => (sd[`optim.v.${i}`] = t));
    await run.save("resume", sd, {
      ...meta(),
      optimStep: s.step,
      scaler: scaler?.stateDict() ?? null,
      tuning: params[0].device.tuner?.decisions(),
    });
    await run.save("last", model.stateDict(), { epoch, step, config: o.config });
  };
  const t0 = performance.now();
  let waitMs = 0, stoppedAtMaxSteps = false;
  const logBuf: LogRecord[] = [];
  let winStart = performance.now(), winWait = 0, winSteps = 0;
  // The last end-of-epoch validation's seconds: the ETA counts the ones still ahead.
  let valSec = 0;
  try {
    model.train();
    while (epoch < o.epochs) {
      if (inEpoch < stepsPerEpoch) {
        const order = task.order
          ? task.order(epoch, rng(hash32(o.seed, 0xe0c, epoch)))
          : permutation(task.items, rng(hash32(o.seed, 0xe0c, epoch)));
        const first = inEpoch;
        const fetch = new Prefetcher(pool, (b) => {
          const bi = first + b;
          if (bi >= stepsPerEpoch) return null;
          return Array.from({ length: perReplica }, (_, k) => {
            const pos = bi * o.batch + rank * perReplica + k;
            return task.job(order[pos], rng(hash32(o.seed, 0xa09, epoch, pos)));
          });
        }, o.prefetch);
        while (inEpoch < stepsPerEpoch) {
          // With replicas, a signal is acted on once every replica knows it (it travels with the step).
          if (stop && !R) {
            await save();
            throw new Interrupted(stop, step);
          }
          if (o.maxSteps && step >= o.maxSteps) {
            stoppedAtMaxSteps = true;
            break;
          }
          const w0 = fetch.waitMs;
          const batch = await fetch.next();
          if (!batch) {
            throw new Error(`${task.name}: the loader ran out of batches at ${inEpoch}/${stepsPerEpoch}`);
          }
          const lr = sched(step);
          opt.lr = lr;
          // Replica 0 draws what one device draws (dropout masks differ from one device's on the others).
          manualSeed(rank ? hash32(o.seed, 0xd40, step, rank) : hash32(o.seed, 0xd40, step));
          opt.zeroGrad();
          let loss: number;
          if (R) {
            const r = await R.step(params, () => amp(() => task.loss(batch as S[])), update, !!stop);
            loss = r.loss;
            if (r.stop) agreedStop = stop ?? "a signal on another replica";
          } else if (scaler) {
            // One GPU wait: the loss and the overflow flag come back together, then step or skip.
            const rep = tidy(() => {
              const l = autocast(() => task.loss(batch as S[]));
              scaler.scaleLoss(l).backward();
              return scaler.unscale(params, l);
            });
            const r = await scaler.read(rep);
            scaler.step(r, () => tidy(update));
            loss = r.loss;
          } else {
            const lossT = tidy(() => {
              const loss = task.loss(batch as S[]);
              loss.backward();
              update();
              return keep(loss);
            });
            loss = await lossT.item();
            lossT.dispose();
          }
          if (!Number.isFinite(loss)) throw new Error(`${task.name}: loss is ${loss} at step ${step + 1}`);
          step++, inEpoch++;
          const dw = fetch.waitMs - w0;
          waitMs += dw, winWait += dw, winSteps++;
          logBuf.push({ step, epoch: epoch + 1, loss, lr });
          const halt = R ? agreedStop : stop;
          const last = inEpoch === stepsPerEpoch || (o.maxSteps > 0 && step >= o.maxSteps) || !!halt;
          if (step % o.logEvery === 0 || last) {
            const now = performance.now();
            const sec = (now - winStart) / 1000;
            const rate = (winSteps * o.batch) / sec;
            const share = winWait / (now - winStart);
            const total = o.maxSteps
              ? Math.min(o.maxSteps, o.epochs * stepsPerEpoch)
              : o.epochs * stepsPerEpoch;
            const valsAhead = Math.max(0, Math.floor(total / stepsPerEpoch) - epoch);
            const eta = ((total - step) * o.batch) / rate + valsAhead * valSec;
            const avg = logBuf.slice(-winSteps).reduce((s, r) => s + (r as { loss: number }).loss, 0) /
              winSteps;
            logBuf[logBuf.length - 1] = {
              ...logBuf[logBuf.length - 1],
              samplesPerSec: rate,
              dataWait: share,
            };
            if (lead) await run.log(...logBuf.splice(0));
            progress.update(
              `${task.name} epoch ${epoch + 1}/${o.epochs} step ${step}/${total} loss ${avg.toFixed(4)} lr ${
                lr.toExponential(2)
              } ${rate.toFixed(2)} samples/s data-wait ${(100 * share).toFixed(0)}% ETA ${duration(eta)}`,
              true,
            );
            winStart = now, winWait = 0, winSteps = 0;
          }
          if (step % o.saveEvery === 0 || last) await save();
          if (R && agreedStop) {
            await save();
            throw new Interrupted(agreedStop, step);
          }
        }
        if (stoppedAtMaxSteps) break;
      }
      // End of an epoch: validate, record, checkpoint.
      progress.done();
      // A cheap proof that the replicas still hold the same weights (one readback and an 8-byte reduction).
      if (R) await R.checksum(params, `weights after epoch ${epoch + 1}`);
      if (!lead) {
        epoch++, inEpoch = 0;
        continue;
      }
      model.eval();
      const v0 = performance.now();
      const metrics = await amp(() => task.validate(progress));
      valSec = (performance.now() - v0) / 1000;
      model.train();
      const value = metrics[task.metric.name];
      const rec: EpochRecord = { epoch: epoch + 1, step, metrics };
      epochs.push(rec);
      await run.log({ epoch: epoch + 1, step, metrics });
      const better = value !== undefined && Number.isFinite(value) &&
        (!best || (task.metric.mode === "max" ? value > best.value : value < best.value));
      const ckMeta = { epoch: epoch + 1, step, metrics, config: o.config };
      await run.save(`epoch-${String(epoch + 1).padStart(3, "0")}`, model.stateDict(), ckMeta);
      if (better) {
        best = { value, epoch: epoch + 1 };
        await run.save("best", model.stateDict(), ckMeta);
      }
      await pruneEpochs(run, epochs, task.metric, o.keep);
      progress.log(
        `${task.name} epoch ${epoch + 1}/${o.epochs}: ${
          Object.entries(metrics).map(([k, v]) => `${k} ${v.toFixed(4)}`).join(" ")
        }${better ? " (best)" : ""}`,
      );
      epoch++, inEpoch = 0;
      await save();
      await writeCurves(run, task, epochs);
      // The next epoch's first rate window measures training, not this validation and these checkpoints.
      winStart = performance.now(), winWait = 0;
    }
  } finally {
    progress.done();
    pool.close();
    for (const [s, h] of handlers) Deno.removeSignalListener(s, h);
    opt.dispose();
  }
  if (lead) await writeCurves(run, task, epochs);
  const seconds = (performance.now() - t0) / 1000;
  return { steps: step, epochs, best, stoppedAtMaxSteps, dataWaitShare: waitMs / (seconds * 1000), seconds };
}

function quietProgress(): Progress {
  const p = new Progress(1, false);
  p.update = () => {};
  p.log = () => {};
  return p;
}

/** A permutation of 0..n-1 (Fisher-Yates). */
export function permutation(n: number, rnd: () => number): number[] {
  const p = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(rnd() * (i + 1));
    [p[i], p[j]] = [p[j], p[i]];
  }
  return p;
}

async function loadResume(run: RunFolder, model: Module, opt: AdamW) {
  const path = `${run.dir}/resume.safetensors`;
  const { tensors, meta } = await readCheckpointHost(path);
  const device = model.parameters()[0].device;
  const weights: Record<string, (typeof tensors)[string]> = {};
  for (const [k, v] of Object.entries(tensors)) if (k.startsWith("model.")) weights[k.slice(6)] = v;
  const up = upload(weights, device);
  try {
    model.loadStateDict(up);
  } catch (e) {
    throw new Error(`${path}: does not fit the model (${(e as Error).message})`);
  } finally {
    for (const t of Object.values(up)) t.dispose();
  }
  const n = model.parameters().length;
  const mv: Record<string, (typeof tensors)[string]> = {};
  for (let i = 0; i < n; i++) {
    for (const w of ["m", "v"]) {
      const t = tensors[`optim.${w}.${i}`];
      if (!t) throw new Error(`${path}: optimizer state optim.${w}.${i} missing`);
      mv[`${w}${i}`] = t;
    }
  }
  const dev = upload(mv, device);
  const ids = [...Array(n).keys()];
  opt.loadStateDict({
    step: meta.optimStep as number,
    m: ids.map((i) => dev[`m${i}`]),
    v: ids.map((i) => dev[`v${i}`]),
  });
  for (const t of Object.values(dev)) t.dispose();
  return {
    step: meta.step as number,
    epoch: meta.epoch as number,
    inEpoch: meta.inEpoch as number,
    best: (meta.best ?? null) as { value: number; epoch: number } | null,
    epochs: (meta.epochs ?? []) as EpochRecord[],
    scaler: (meta.scaler ?? null) as { scale: number; growthTracker: number } | null,
    tuning: (meta.tuning ?? null) as TuneDecision[] | null,
  };
}

async function pruneEpochs(
  run: RunFolder,
  epochs: EpochRecord[],
  metric: TrainTask<never>["metric"],
  keepN: number,
): Promise<void> {
  const scored = epochs.filter((e) => Number.isFinite(e.metrics[metric.name]));
  scored.sort((a, b) =>
    metric.mode === "max"
      ? b.metrics[metric.name] - a.metrics[metric.name]
      : a.metrics[metric.name] - b.metrics[metric.name]
  );
  const kept = new Set(scored.slice(0, Math.max(0, keepN)).map((e) => e.epoch));
  for (const e of epochs) {
    if (!kept.has(e.epoch)) await run.remove(`epoch-${String(e.epoch).padStart(3, "0")}.safetensors`);
  }
}

async function writeCurves(run: RunFolder, task: TrainTask<never>, epochs: EpochRecord[]): Promise<void> {
  const recs = run.records().filter((r): r is Extract<LogRecord, { loss: number }> => "loss" in r);
  await run.writeText(
    "curves.svg",
    curvesSvg({
      title: `${task.name}: ${run.dir}`,
      loss: recs.map((r) => [r.step, r.loss]),
      lr: recs.map((r) => [r.step, r.lr]),
      metric: {
        name: task.metric.name,
        points: epochs.map((e) => [e.step, e.metrics[task.metric.name]] as [number, number]),
      },
    }),
  );
}
