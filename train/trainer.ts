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
  const h = new Harness(task, run, o);
  await h.resume();
  const handlers: [Deno.Signal, () => void][] = (["SIGINT", "SIGTERM"] as Deno.Signal[]).map((
    s,
  ) => [s, h.onSignal(s)]);
  for (const [s, fn] of handlers) Deno.addSignalListener(s, fn);
  const pool = new WorkerPool(o.workers);
  const t0 = performance.now();
  try {
    task.model.train();
    while (h.epoch < o.epochs) {
      if (h.inEpoch < h.stepsPerEpoch && !await h.trainEpoch(pool)) break;
      await h.endEpoch();
    }
  } finally {
    h.progress.done();
    pool.close();
    for (const [s, fn] of handlers) Deno.removeSignalListener(s, fn);
    h.steps.opt.dispose();
  }
  if (h.lead) await writeCurves(run, task, h.epochs);
  const seconds = (performance.now() - t0) / 1000;
  return {
    steps: h.step,
    epochs: h.epochs,
    best: h.best,
    stoppedAtMaxSteps: h.stoppedAtMaxSteps,
    dataWaitShare: h.rate.waitMs / (seconds * 1000),
    seconds,
  };
}

/**
 * One optimizer step on a batch, whichever way the gradients are made: over replicas, under a GradScaler
 * (`--amp` on one device), or plainly; each waits for the GPU once, for the loss.
 */
class Stepper {
  readonly opt: AdamW;
  readonly params: Tensor[];
  readonly scaler: GradScaler | null;
  readonly sched: (step: number) => number;
  readonly #half: boolean;

  constructor(model: Module, items: number, readonly o: TrainerOptions, readonly R: Replicas | null) {
    const tMax = Math.max(1, seedTMax(o.epochs, items, o.batch));
    const warmup = Math.min(o.warmup ?? 0, tMax - 1);
    this.sched = cosineSchedule({
      lrMax: o.lr,
      etaMin: o.etaMin,
      totalSteps: Math.max(1, tMax - warmup),
      warmup,
    });
    this.opt = seedAdamW(model, o.lr, o.weightDecay, o.adamEps);
    this.params = model.parameters();
    this.#half = !!o.amp && hasF16(this.params[0].device);
    if (o.amp && !this.#half) {
      console.warn(`--amp: "${this.params[0].device.info.label}" has no shader-f16; training in f32`);
    }
    this.scaler = this.#half && !R ? new GradScaler() : null;
  }

  /** Runs `fn` under autocast when training in f16. */
  amp<T>(fn: () => T): T {
    return this.#half ? autocast(fn) : fn();
  }

  /** After backward, whichever path made the gradients: global clipping, then AdamW. */
  #update = () => {
    if (this.o.clip > 0) clipGradNorm(this.params, this.o.clip).dispose();
    this.opt.step();
  };

  /** The step's loss; with replicas also whether some replica was asked to stop. */
  async step(loss: () => Tensor, stopping: boolean): Promise<{ loss: number; stop: boolean }> {
    this.opt.zeroGrad();
    if (this.R) return await this.R.step(this.params, () => this.amp(loss), this.#update, stopping);
    const scaler = this.scaler;
    if (scaler) {
      // One GPU wait: the loss and the overflow flag come back together, then step or skip.
      const rep = tidy(() => {
        const l = autocast(loss);
        scaler.scaleLoss(l).backward();
        return scaler.unscale(this.params, l);
      });
      const r = await scaler.read(rep);
      scaler.step(r, () => tidy(this.#update));
      return { loss: r.loss, stop: false };
    }
    const lossT = tidy(() => {
      const l = loss();
      l.backward();
      this.#update();
      return keep(l);
    });
    const value = await lossT.item();
    lossT.dispose();
    return { loss: value, stop: false };
  }
}

/** The log's records between two progress lines, and the sample rate, data wait and ETA they show. */
class RateWindow {
  /** Milliseconds the steps waited for the loader, over the whole run. */
  waitMs = 0;
  /** The last end-of-epoch validation's seconds: the ETA counts the ones still ahead. */
  valSec = 0;
  readonly #records: LogRecord[] = [];
  #start = performance.now();
  #wait = 0;
  #steps = 0;

  /** Adds a step's record and the milliseconds it waited for its batch. */
  add(rec: LogRecord & { loss: number }, waitMs: number): void {
    this.#records.push(rec);
    this.waitMs += waitMs, this.#wait += waitMs, this.#steps++;
  }

  /**
   * Closes the window: its last record gets the rate and data-wait share. Returns the records to log and
   * the progress line (the window's mean loss, the rate, the ETA).
   */
  close(
    what: string,
    o: { batch: number; left: number; vals: number },
  ): { records: LogRecord[]; line: string } {
    const now = performance.now();
    const sec = (now - this.#start) / 1000;
    const rate = (this.#steps * o.batch) / sec;
    const share = this.#wait / (now - this.#start);
    const eta = (o.left * o.batch) / rate + o.vals * this.valSec;
    const recent = this.#records.slice(-this.#steps) as (LogRecord & { loss: number; lr: number })[];
    const avg = recent.reduce((s, r) => s + r.loss, 0) / this.#steps;
    const lastRec = recent[recent.length - 1];
    this.#records[this.#records.length - 1] = { ...lastRec, samplesPerSec: rate, dataWait: share };
    this.restart();
    const line =
      `${what} loss ${avg.toFixed(4)} lr ${lastRec.lr.toExponential(2)} ${rate.toFixed(2)} samples/s ` +
      `data-wait ${(100 * share).toFixed(0)}% ETA ${duration(eta)}`;
    return { records: this.#records.splice(0), line };
  }

  /** Starts a new window (after validation and checkpoints, so that it measures training alone). */
  restart(): void {
    this.#start = performance.now(), this.#wait = 0, this.#steps = 0;
  }
}

/** A run's state between steps (what resume.safetensors holds) and the stage's pieces around it. */
class Harness<S extends SampleResult> {
  readonly R: Replicas | null;
  readonly rank: number;
  readonly lead: boolean;
  readonly perReplica: number;
  readonly stepsPerEpoch: number;
  readonly steps: Stepper;
  readonly progress: Progress;
  readonly rate = new RateWindow();
  step = 0;
  epoch = 0;
  inEpoch = 0;
  best: { value: number; epoch: number } | null = null;
  epochs: EpochRecord[] = [];
  stoppedAtMaxSteps = false;
  /** The signal that asked this process to stop. */
  stop: string | null = null;
  /** With replicas: the stop every replica agreed on (some replica's signal, carried by a step). */
  agreedStop: string | null = null;

  constructor(readonly task: TrainTask<S>, readonly run: RunFolder, readonly o: TrainerOptions) {
    this.R = o.replicas && o.replicas.world > 1 ? o.replicas : null;
    const world = this.R?.world ?? 1;
    this.rank = this.R?.rank ?? 0, this.lead = this.rank === 0;
    if (o.batch % world) {
      throw new Error(`${task.name}: the global batch ${o.batch} does not split over ${world} devices`);
    }
    this.perReplica = o.batch / world;
    this.stepsPerEpoch = Math.floor(task.items / o.batch);
    if (this.stepsPerEpoch < 1) {
      throw new Error(`${task.name}: ${task.items} training items do not fill one batch of ${o.batch}`);
    }
    this.steps = new Stepper(task.model, task.items, o, this.R);
    // Under mpirun stdout is a pseudo-terminal that the launcher pipes on: plain lines, not a redrawn one.
    this.progress = this.lead ? new Progress(o.logEvery, this.R ? false : undefined) : quietProgress();
  }

  /** Continues from the run folder's resume state when asked to and there is one. */
  async resume(): Promise<void> {
    const { o, run } = this;
    if (!o.resume || !await run.has("resume.safetensors")) return;
    const st = await loadResume(run, this.task.model, this.steps.opt);
    ({ step: this.step, epoch: this.epoch, inEpoch: this.inEpoch, best: this.best, epochs: this.epochs } =
      st);
    if (this.steps.scaler && st.scaler) this.steps.scaler.loadStateDict(st.scaler);
    // Under CSN_BENCHMARK=1 the kernel variants the run chose before (they decide the results' last bits).
    if (st.tuning) this.steps.params[0].device.tuner?.load(st.tuning);
    if (this.lead) await run.truncateLog(this.step, this.epoch);
    this.progress.log(
      `resuming ${run.dir} at step ${this.step} (epoch ${
        this.epoch + 1
      }, batch ${this.inEpoch}/${this.stepsPerEpoch})`,
    );
  }

  /** A signal handler: the current step finishes, then the state is saved and the run stops. */
  onSignal(sig: Deno.Signal): () => void {
    return () => {
      if (this.stop) return;
      this.stop = sig;
      this.progress.log(`${sig}: finishing the current step, then saving`);
    };
  }

  /** Saves resume.safetensors (weights, optimizer moments, counters) and last.safetensors. */
  async save(): Promise<void> {
    if (!this.lead) return;
    const sd: Record<string, Tensor> = {};
    for (const [k, t] of Object.entries(this.task.model.stateDict())) sd[`model.${k}`] = t;
    const s = this.steps.opt.stateDict();
    s.m.forEach((t, i) => (sd[`optim.m.${i}`] = t));
    s.v.forEach((t, i) => (sd[`optim.v.${i}`] = t));
    const { step, epoch, inEpoch, best, epochs } = this;
    await this.run.save("resume", sd, {
      step,
      epoch,
      inEpoch,
      best,
      epochs,
      config: this.o.config,
      optimStep: s.step,
      scaler: this.steps.scaler?.stateDict() ?? null,
      tuning: this.steps.params[0].device.tuner?.decisions(),
    });
    await this.run.save("last", this.task.model.stateDict(), { epoch, step, config: this.o.config });
  }

  /** The rest of the current epoch's steps; false when `maxSteps` stopped it. */
  async trainEpoch(pool: WorkerPool): Promise<boolean> {
    const { o, task, R } = this;
    const order = task.order
      ? task.order(this.epoch, rng(hash32(o.seed, 0xe0c, this.epoch)))
      : permutation(task.items, rng(hash32(o.seed, 0xe0c, this.epoch)));
    const first = this.inEpoch, epoch = this.epoch;
    const fetch = new Prefetcher(pool, (b) => {
      const bi = first + b;
      if (bi >= this.stepsPerEpoch) return null;
      return Array.from({ length: this.perReplica }, (_, k) => {
        const pos = bi * o.batch + this.rank * this.perReplica + k;
        return task.job(order[pos], rng(hash32(o.seed, 0xa09, epoch, pos)));
      });
    }, o.prefetch);
    while (this.inEpoch < this.stepsPerEpoch) {
      // With replicas, a signal is acted on once every replica knows it (it travels with the step).
      if (this.stop && !R) {
        await this.save();
        throw new Interrupted(this.stop, this.step);
      }
      if (o.maxSteps && this.step >= o.maxSteps) {
        this.stoppedAtMaxSteps = true;
        return false;
      }
      const w0 = fetch.waitMs;
      const batch = await fetch.next();
      if (!batch) {
        throw new Error(
          `${task.name}: the loader ran out of batches at ${this.inEpoch}/${this.stepsPerEpoch}`,
        );
      }
      await this.#step(batch as S[], fetch.waitMs - w0);
      const halt = R ? this.agreedStop : this.stop;
      const last = this.inEpoch === this.stepsPerEpoch || (o.maxSteps > 0 && this.step >= o.maxSteps) ||
        !!halt;
      if (this.step % o.logEvery === 0 || last) await this.#logWindow();
      if (this.step % o.saveEvery === 0 || last) await this.save();
      if (R && this.agreedStop) {
        await this.save();
        throw new Interrupted(this.agreedStop, this.step);
      }
    }
    return true;
  }

  async #step(batch: S[], waitMs: number): Promise<void> {
    const { o, R } = this;
    const lr = this.steps.sched(this.step);
    this.steps.opt.lr = lr;
    // Replica 0 draws what one device draws (dropout masks differ from one device's on the others).
    manualSeed(this.rank ? hash32(o.seed, 0xd40, this.step, this.rank) : hash32(o.seed, 0xd40, this.step));
    const r = await this.steps.step(() => this.task.loss(batch), !!this.stop);
    if (R && r.stop) this.agreedStop = this.stop ?? "a signal on another replica";
    if (!Number.isFinite(r.loss)) {
      throw new Error(`${this.task.name}: loss is ${r.loss} at step ${this.step + 1}`);
    }
    this.step++, this.inEpoch++;
    this.rate.add({ step: this.step, epoch: this.epoch + 1, loss: r.loss, lr }, waitMs);
  }

  async #logWindow(): Promise<void> {
    const { o, step } = this;
    const total = o.maxSteps
      ? Math.min(o.maxSteps, o.epochs * this.stepsPerEpoch)
      : o.epochs * this.stepsPerEpoch;
    const what = `${this.task.name} epoch ${this.epoch + 1}/${o.epochs} step ${step}/${total}`;
    const vals = Math.max(0, Math.floor(total / this.stepsPerEpoch) - this.epoch);
    const { records, line } = this.rate.close(what, { batch: o.batch, left: total - step, vals });
    if (this.lead) await this.run.log(...records);
    this.progress.update(line, true);
  }

  /** End of an epoch: validate, record, checkpoint (the lead only; the others count the epoch). */
  async endEpoch(): Promise<void> {
    const { task, run, o } = this;
    this.progress.done();
    // A cheap proof that the replicas still hold the same weights (one readback and an 8-byte reduction).
    if (this.R) await this.R.checksum(this.steps.params, `weights after epoch ${this.epoch + 1}`);
    if (!this.lead) {
      this.epoch++, this.inEpoch = 0;
      return;
    }
    const epoch = this.epoch + 1, step = this.step;
    task.model.eval();
    const v0 = performance.now();
    const metrics = await this.steps.amp(() => task.validate(this.progress));
    this.rate.valSec = (performance.now() - v0) / 1000;
    task.model.train();
    const value = metrics[task.metric.name];
    this.epochs.push({ epoch, step, metrics });
    await run.log({ epoch, step, metrics });
    const better = value !== undefined && Number.isFinite(value) &&
      (!this.best || (task.metric.mode === "max" ? value > this.best.value : value < this.best.value));
    const ckMeta = { epoch, step, metrics, config: o.config };
    await run.save(`epoch-${String(epoch).padStart(3, "0")}`, task.model.stateDict(), ckMeta);
    if (better) {
      this.best = { value, epoch };
      await run.save("best", task.model.stateDict(), ckMeta);
    }
    await pruneEpochs(run, this.epochs, task.metric, o.keep);
    this.progress.log(
      `${task.name} epoch ${epoch}/${o.epochs}: ${
        Object.entries(metrics).map(([k, v]) => `${k} ${v.toFixed(4)}`).join(" ")
      }${better ? " (best)" : ""}`,
    );
    this.epoch++, this.inEpoch = 0;
    await this.save();
    await writeCurves(run, task, this.epochs);
    // The next epoch's first rate window measures training, not this validation and these checkpoints.
    this.rate.restart();
  }
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
