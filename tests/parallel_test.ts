/**
 * Data parallelism (parallel/): N = 2 replicas under mpirun, batch b each, against one device with batch 2b,
 * same seed and data, with batch norm in training mode (SyncBN):
 *  - a tiny CSN classifier, 5 steps through Replicas.step, with the seed's AdamW and with an SGD-like AdamW
 *    (eps = 1: the update is lr * m / (sqrt(v) + 1), about lr * m for small gradients);
 *  - a tiny CSN-UNet trained by the harness (train/trainer.ts) started as `--devices` does it (launchRanks,
 *    openWorld): 2 devices vs 1 at the same global batch, then each run resumed with the other N;
 *  - a replica killed mid-run: the launcher names it and its adapter within 10 s, the checkpoint loads.
 *
 * This file is also the replica program: `deno run -A tests/parallel_test.ts` with CSN_PAR_ROLE set.
 */
import { models, openDevice, tensor } from "../mod.ts";
import type { Module } from "../nn/module.ts";
import { bceWithLogits } from "../kernels/loss.ts";
import { seedInit } from "../nn/init.ts";
import { AdamW } from "../optim/adamw.ts";
import { Mpi } from "../parallel/mpi.ts";
import { Replicas } from "../parallel/replicas.ts";
import { launchRanks, mpirunArgs } from "../parallel/launch.ts";
import { underMpirun } from "../parallel/mpi.ts";
import { openWorld } from "../parallel/world.ts";
import { RunFolder } from "../train/run_folder.ts";
import { train, type TrainTask } from "../train/trainer.ts";
import { runJob, type SampleJob } from "../train/samples.ts";
import type { SegSample } from "../train/seg_data.ts";
import { readCheckpointHost } from "../io/files.ts";
import { noGrad } from "../mod.ts";
import { segLoss } from "../models/losses.ts";

function assert(c: unknown, msg = "assertion failed"): asserts c {
  if (!c) throw new Error(msg);
}
function assertEquals(a: unknown, b: unknown) {
  assert(a === b, `expected ${b}, got ${a}`);
}

const STEPS = 5, B = 4; // global batch; 2 per replica with N = 2
const SHAPE = [1, 8, 32, 32];
/** The optimizers compared: the seed's AdamW, and an SGD-like AdamW (eps 1) where round-off stays round-off. */
const OPTIMS = [{ name: "adamw", lr: 1e-3, eps: 1e-8 }, { name: "sgd-like", lr: 0.1, eps: 1 }];

function prng(seed: number) {
  let s = seed >>> 0;
  return () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32);
}

/** The global batch of step `t`: inputs [B, ...SHAPE] and targets shaped like the model's output. */
function data(t: number, kind: string, lo: number, hi: number) {
  const r = prng(1000 + t);
  const per = SHAPE.reduce((a, b) => a * b, 1);
  const x = Float32Array.from({ length: B * per }, () => r() * 2 - 1 + 0.5);
  const outPer = kind === "cls" ? 8 : 8 * per;
  const y = Float32Array.from({ length: B * outPer }, () => (r() < 0.3 ? 1 : 0));
  return {
    x: x.subarray(lo * per, hi * per),
    y: y.subarray(lo * outPer, hi * outPer),
    xs: [hi - lo, ...SHAPE],
    ys: kind === "cls" ? [hi - lo, 8] : [hi - lo, 8, ...SHAPE.slice(1)],
  };
}

/** The samples of a batch in the given order (the same sums in another order). */
function permuted(d: ReturnType<typeof data>, order: number[]): ReturnType<typeof data> {
  const pick = (v: Float32Array) => {
    const per = v.length / order.length, o = new Float32Array(v.length);
    order.forEach((k, i) => o.set(v.subarray(k * per, (k + 1) * per), i * per));
    return o;
  };
  return { x: pick(d.x), y: pick(d.y), xs: d.xs, ys: d.ys };
}

async function flat(ts: { toArray(): Promise<unknown> }[]): Promise<number[]> {
  const out: number[] = [];
  for (const t of ts) out.push(...await t.toArray() as number[]);
  return out;
}

/** The replica program of the Replicas.step tests (role "ref": one device, "ddp": a rank under mpirun). */
async function replicaMain() {
  const kind = Deno.env.get("CSN_PAR_MODEL")!, out = Deno.env.get("CSN_PAR_OUT")!;
  const role = Deno.env.get("CSN_PAR_ROLE")!;
  const device = await openDevice();
  const mpi = role === "ddp" ? Mpi.init() : null;
  const rep = mpi ? new Replicas(mpi, device) : null;
  const world = rep?.world ?? 1, rank = rep?.rank ?? 0;
  const b = B / world;
  const results: Record<string, unknown> = {};
  for (const o of OPTIMS) {
    seedInit(7);
    const model: Module = kind === "cls"
      ? new models.CSNClassifier({ device, encoder: "r26ir", baseChannels: 4, numClasses: 8, dropout: 0 })
      : new models.CSNUNet({
        device,
        encoder: "r26ir",
        baseChannels: 4,
        numClasses: 8,
        decoderFilters: [4, 4, 4, 4],
      });
    model.train();
    const params = model.parameters();
    const opt = new AdamW([{ params }], { lr: o.lr, weightDecay: 1e-2, eps: o.eps });
    rep?.convertSyncBatchNorm(model);
    await rep?.broadcastState(model);
    const w0 = rank === 0 ? await flat(params) : [];
    const losses: number[] = [];
    let grads0: number[] = [];
    for (let t = 0; t < STEPS; t++) {
      if (role === "ddp" && rank === 1 && Deno.env.get("CSN_PAR_DIE") && t === 2) Deno.exit(3);
      // "perm": one device on the same global batch in another order (the round-off floor of a reordering).
      const order = Deno.env.get("CSN_PAR_PERM")?.split(",").map(Number);
      const d = order ? permuted(data(t, kind, 0, B), order) : data(t, kind, rank * b, rank * b + b);
      const lossOf = () => {
        const x = tensor(d.x, d.xs, { device }), y = tensor(d.y, d.ys, { device });
        const l = bceWithLogits(model.forward(x), y);
        x.dispose(), y.dispose();
        return l;
      };
      opt.zeroGrad();
      if (rep) {
        const r = await rep.step(params, lossOf, () => opt.step());
        losses.push(r.loss);
      } else {
        const l = lossOf();
        l.backward();
        opt.step();
        losses.push(await l.item());
        l.dispose();
      }
      if (t === 0 && rank === 0) grads0 = await flat(params.map((p) => p.grad!));
    }
    const sum = rep ? await rep.checksum(params) : 0;
    if (rank === 0) {
      const rm = await flat(
        Object.entries(model.stateDict()).filter(([k]) => /running_(var|mean)$/.test(k)).map(([, t]) => t),
      );
      results[o.name] = { w0, flat: await flat(params), rm, losses, grads0, checksum: sum };
    }
    opt.dispose();
    model.dispose();
  }
  if (rank === 0) await Deno.writeTextFile(out, JSON.stringify({ world, results }));
  await mpi?.finalize();
  device.destroy();
}

// ---- The harness under --devices: a tiny CSN-UNet segmenting synthetic volumes (no dropout). ----

const TRAIN_SHAPE: [number, number, number] = [8, 32, 32];

function unetTask(device: Awaited<ReturnType<typeof openDevice>>): TrainTask<SegSample> {
  seedInit(3);
  const model = new models.CSNUNet({
    device,
    encoder: "r26ir",
    baseChannels: 4,
    numClasses: 3,
    decoderFilters: [4, 4, 4, 4],
  });
  const job = (s: number): SampleJob => ({ kind: "synthetic", seed: s, shape: TRAIN_SHAPE, classes: 3 });
  const lossOf = (b: SegSample[]) => {
    const n = TRAIN_SHAPE[0] * TRAIN_SHAPE[1] * TRAIN_SHAPE[2];
    const x = new Float32Array(b.length * n), y = new Int32Array(b.length * n);
    b.forEach((s, i) => (x.set(s.image, i * n), y.set(s.target, i * n)));
    const xt = tensor(x, [b.length, 1, ...TRAIN_SHAPE], { device });
    const yt = tensor(y, [b.length, ...TRAIN_SHAPE], { device });
    // Focal loss only: its normaliser (all voxels) splits exactly over replicas.
    return segLoss(model.forward(xt), yt, { jaccardWeight: 0 });
  };
  return {
    name: "unet",
    model,
    items: 8,
    job: (_item, rnd) => job(Math.floor(rnd() * 2 ** 32)),
    loss: lossOf,
    async validate() {
      const val = (await Promise.all([1, 2].map((s) => runJob(job(s))))) as SegSample[];
      const l = noGrad(() => lossOf(val));
      const v = await l.item();
      l.dispose();
      return { loss: v };
    },
    metric: { name: "loss", mode: "min" },
  };
}

/** `--devices N` for the harness, as train/stages.ts does it: launch N ranks, or be one of them. */
async function trainerMain() {
  const env = (k: string) => Deno.env.get(`CSN_PAR_${k}`)!;
  const n = Number(env("DEVICES")), dir = env("DIR");
  if (n > 1 && !underMpirun()) {
    const r = await launchRanks(n, [Deno.execPath(), "run", "-A", self]);
    if (r.code !== 0) {
      console.error(`error: ${r.failure ?? `mpirun exited with code ${r.code}`}`);
      Deno.exitCode = 1;
    }
    return;
  }
  const w = await openWorld({ devices: n });
  if (w.lead) { for (const line of w.placement) console.log(`devices: ${line}`); }
  const task = unetTask(w.device);
  w.replicas?.convertSyncBatchNorm(task.model);
  await w.replicas?.broadcastState(task.model);
  const resume = env("RESUME") === "1";
  const config = { test: "parallel", lr: 0.1 };
  if (w.lead) await RunFolder.open(dir, config, resume);
  await w.barrier();
  const run = await RunFolder.open(dir, config, true);
  await train(task, run, {
    epochs: 3,
    batch: B,
    lr: 0.1,
    etaMin: 1e-3,
    weightDecay: 0.01,
    clip: 0,
    maxSteps: Number(env("STEPS")),
    seed: 11,
    keep: 3,
    logEvery: 1,
    saveEvery: 1,
    workers: 0,
    prefetch: 1,
    resume,
    config,
    replicas: w.replicas,
    adamEps: 1,
  });
  await w.close();
  task.model.dispose();
  w.device.destroy();
}

const self = new URL(import.meta.url).pathname;
const role = Deno.env.get("CSN_PAR_ROLE");
if (import.meta.main && (role === "ref" || role === "ddp")) await replicaMain();
if (import.meta.main && role === "trainer") await trainerMain();

async function runRole(role: "ref" | "ddp", kind: string, extra: Record<string, string> = {}) {
  const out = await Deno.makeTempFile({ suffix: ".json" });
  const env = {
    XDG_RUNTIME_DIR: "/tmp",
    CSN_PAR_ROLE: role,
    CSN_PAR_MODEL: kind,
    CSN_PAR_OUT: out,
    ...extra,
  };
  const deno = [Deno.execPath(), "run", "-A", self];
  const [cmd, ...args] = role === "ref" ? deno : [...mpirunArgs(2, Object.keys(env)), ...deno];
  const t0 = performance.now();
  const o = await new Deno.Command(cmd, { args, env, stdout: "piped", stderr: "piped" }).output();
  const sec = (performance.now() - t0) / 1000;
  const text = new TextDecoder().decode(o.stdout) + new TextDecoder().decode(o.stderr);
  return { ok: o.success, text, sec, out };
}

function maxDiff(a: number[], b: number[]) {
  assertEquals(a.length, b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}
const maxAbs = (a: number[]) => a.reduce((m, v) => Math.max(m, Math.abs(v)), 0);

Deno.test(`parallel: 2 replicas x batch ${B / 2} == 1 device x batch ${B} (CSN classifier, SyncBN, ${STEPS} steps)`, async () => {
  // "perm": one device, the same global batches in other orders (halves swapped, pairs swapped, reversed):
  // the same sums in another order. The run is chaotic, so one reordering is one draw of its spread: the
  // floor is the largest of three.
  const orders = ["2,3,0,1", "1,0,3,2", "3,2,1,0"];
  const ref = await runRole("ref", "cls");
  const perms = [];
  for (const p of orders) perms.push(await runRole("ref", "cls", { CSN_PAR_PERM: p }));
  const ddp = await runRole("ddp", "cls");
  for (const r of [ref, ...perms, ddp]) assert(r.ok, r.text);
  const [R, D, ...Ps] = await Promise.all(
    [ref, ddp, ...perms].map(async (r) => {
      const j = JSON.parse(await Deno.readTextFile(r.out));
      await Deno.remove(r.out);
      return j;
    }),
  );
  assertEquals(D.world, 2);
  for (const o of OPTIMS) {
    const r = R.results[o.name], d = D.results[o.name];
    const moved = maxDiff(r.flat, r.w0);
    const m = (x: typeof r) => ({
      g: maxDiff(r.grads0, x.grads0) / maxAbs(r.grads0),
      w: maxDiff(r.flat, x.flat),
      l: maxDiff(r.losses, x.losses),
    });
    const dd = m(d), floors = Ps.map((P) => m(P.results[o.name]));
    const dp = {
      g: Math.max(...floors.map((f) => f.g)),
      w: Math.max(...floors.map((f) => f.w)),
      l: Math.max(...floors.map((f) => f.l)),
    };
    const e = (v: number) => v.toExponential(2);
    console.log(
      `cls ${o.name} (lr ${o.lr}, eps ${o.eps}), 2 replicas vs 1 device [1 device reordered 3 ways vs 1 device, the largest]: ` +
        `step-1 gradients max diff / max |g| ${e(dd.g)} [${e(dp.g)}]; after ${STEPS} steps max |w diff| ` +
        `${e(dd.w)} [${e(dp.w)}] (largest weight change ${e(moved)}), losses ${e(dd.l)} [${e(dp.l)}]`,
    );
    // Step 1 (same weights): fp32 round-off of differently ordered sums, 1e-4 relative (house tolerance);
    // a wrong reduction (a sum for a mean, a missed bucket, local batch norm) is off by O(1) here.
    assert(dd.g < 1e-4, `${o.name}: step-1 gradients differ by ${dd.g} of max |g|`);
    assert(Math.abs(r.losses[0] - d.losses[0]) < 1e-5, `step-1 losses ${r.losses[0]} vs ${d.losses[0]}`);
    // This tiny classifier amplifies round-off (batch norm over 4 values in its last stage): reordering
    // the batch on ONE device moves the 5-step weights as much. Replicas must stay within 3x that floor
    // (one reordering's losses moved 1.4e-3 to 3.5e-2 from one build of the kernels to the next).
    assert(dd.w <= 3 * dp.w + 1e-6, `${o.name}: weights differ by ${dd.w}, reordering floor ${dp.w}`);
    assert(dd.l <= 3 * dp.l + 1e-6, `${o.name}: losses differ by ${dd.l}, reordering floor ${dp.l}`);
  }
});

function runTrainer(dir: string, devices: number, steps: number, resume: boolean) {
  const env = {
    XDG_RUNTIME_DIR: "/tmp",
    CSN_PAR_ROLE: "trainer",
    CSN_PAR_DIR: dir,
    CSN_PAR_DEVICES: String(devices),
    CSN_PAR_STEPS: String(steps),
    CSN_PAR_RESUME: resume ? "1" : "0",
  };
  return new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", self],
    env,
    stdout: "piped",
    stderr: "piped",
  })
    .spawn();
}

async function finished(p: Deno.ChildProcess) {
  const o = await p.output();
  return {
    ok: o.success,
    code: o.code,
    text: new TextDecoder().decode(o.stdout) + new TextDecoder().decode(o.stderr),
  };
}

function stepRecords(dir: string): { step: number; loss: number; lr: number }[] {
  return Deno.readTextFileSync(`${dir}/log.jsonl`).trim().split("\n").map((l) => JSON.parse(l))
    .filter((r) => r.loss !== undefined);
}

async function weights(path: string) {
  const c = await readCheckpointHost(path);
  const out: number[] = [];
  for (const [k, t] of Object.entries(c.tensors)) {
    if (!/running|num_batches/.test(k)) out.push(...t.data as Float32Array);
  }
  return { w: out, meta: c.meta as { step: number } };
}

// Only the test process makes (and removes) the folder; the replica programs import this file too.
const tmp = role ? "" : await Deno.makeTempDir({ prefix: "csn-parallel-" });

Deno.test("parallel: the harness on 2 devices == 1 device (CSN-UNet, SyncBN); resume with another N continues the schedule", async () => {
  // A: 1 device to step 2, resumed on 2 devices to step 4. B: 2 devices to step 2, resumed on 1 to step 4.
  const A = `${tmp}/a`, Bd = `${tmp}/b`;
  const a1 = await finished(runTrainer(A, 1, 2, false));
  assert(a1.ok, a1.text);
  const aw2 = await weights(`${A}/last.safetensors`);
  const b1 = await finished(runTrainer(Bd, 2, 2, false));
  assert(b1.ok, b1.text);
  assert(/devices: replica 0 -> .+\ndevices: replica 1 -> /.test(b1.text), `placement listing:\n${b1.text}`);
  const bw2 = await weights(`${Bd}/last.safetensors`);
  const [a2, b2] = [
    await finished(runTrainer(A, 2, 4, true)),
    await finished(runTrainer(Bd, 1, 4, true)),
  ];
  assert(a2.ok, a2.text);
  assert(b2.ok, b2.text);
  const aw4 = await weights(`${A}/last.safetensors`), bw4 = await weights(`${Bd}/last.safetensors`);
  const la = stepRecords(A), lb = stepRecords(Bd);
  assertEquals(la.map((r) => r.step).join(), "1,2,3,4");
  assertEquals(lb.map((r) => r.step).join(), "1,2,3,4");
  assert(aw4.meta.step === 4 && bw4.meta.step === 4, "the step counter continues to 4");
  // The cosine schedule continues: the same learning rate at every step, whichever N ran it.
  assertEquals(la.map((r) => r.lr).join(), lb.map((r) => r.lr).join());
  assert(la[2].lr < la[1].lr, "the learning rate moves on after the resume");
  const dl = maxDiff(la.map((r) => r.loss), lb.map((r) => r.loss));
  const moved = maxDiff(aw4.w, aw2.w);
  const d2 = maxDiff(aw2.w, bw2.w), d4 = maxDiff(aw4.w, bw4.w);
  console.log(
    `unet harness (SGD-like AdamW eps 1, lr 0.1): after 2 steps (1 vs 2 devices) max |w diff| ${
      d2.toExponential(2)
    }; ` +
      `after 4 (resumed with the other N) ${d4.toExponential(2)} (${(d4 / moved).toExponential(2)} of the ` +
      `steps 3-4 change ${moved.toExponential(2)}); losses ${dl.toExponential(2)}`,
  );
  assert(d2 / maxAbs(aw2.w) < 1e-5 && d4 / maxAbs(aw4.w) < 1e-5, `weights differ: ${d2}, ${d4}`);
  assert(d4 / moved < 1e-3, `weights differ by ${d4} against steps 3-4 moving them by ${moved}`);
  assert(dl < 1e-5, `losses differ by ${dl}`);
});

Deno.test("parallel: a killed replica stops the run within 10 s with an error naming it and its adapter", async () => {
  const dir = `${tmp}/kill`;
  const p = runTrainer(dir, 2, 1000, false);
  const t0 = performance.now();
  let pid = 0;
  while (performance.now() - t0 < 180_000) {
    const text = await Deno.readTextFile(`${dir}/log.jsonl`).catch(() => "");
    if (text.includes('"step":2')) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  // The placement listing names every replica's pid; rank 1 is killed as `kill -9` would.
  const ps = new TextDecoder().decode(
    (await new Deno.Command("ps", { args: ["-eo", "pid,args"] }).output()).stdout,
  );
  for (const line of ps.split("\n")) {
    const m = /^\s*(\d+)\s+(.*)$/.exec(line);
    if (m && m[2].includes(self) && !m[2].includes("mpirun")) {
      const env = await Deno.readTextFile(`/proc/${m[1]}/environ`).catch(() => "");
      if (env.includes("OMPI_COMM_WORLD_RANK=1\0")) pid = Number(m[1]);
    }
  }
  assert(pid > 0, "found replica 1's process");
  const killed = performance.now();
  Deno.kill(pid, "SIGKILL");
  const r = await finished(p);
  const sec = (performance.now() - killed) / 1000;
  console.log(
    `killed replica 1: the run stopped ${sec.toFixed(1)} s after the kill; the error:\n${
      r.text.split("\n").filter((l) => l.startsWith("error:")).join("\n")
    }`,
  );
  assert(!r.ok, "the run should fail");
  assert(
    /error: replica 1 \(llvmpipe|error: replica 1 \(.+pid \d+/.test(r.text) && /signal 9/.test(r.text),
    r.text.slice(-3000),
  );
  assert(sec < 10, `took ${sec} s after the kill`);
  const c = await readCheckpointHost(`${dir}/resume.safetensors`);
  assert((c.meta as { step: number }).step >= 2, "the last checkpoint loads");
});

Deno.test({ name: "cleanup", fn: () => Deno.remove(tmp, { recursive: true }) });
