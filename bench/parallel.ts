/**
 * Data parallelism (parallel/) costs, on this machine:
 *  - MPI all-reduce bandwidth for the full models' gradients (ir-CSN-152: 28.9 M floats; ir-CSN-50 UNet:
 *    21.9 M), 2 ranks over shared memory and forced onto TCP (`--mca btl tcp,self`), whole and in 25 MiB
 *    buckets (as Replicas.step reduces them);
 *  - the per-step overhead of Replicas.step for those gradient sizes (GPU readback, all-reduce, upload
 *    back) against a one-device step of the same trivial loss, absolute and as a share of the full
 *    models' step times (docs/perf.md figures);
 *  - the step throughput of a tiny CSN classifier for N = 1 and N = 2 replicas sharing the adapter, and
 *    the SyncBN cost per step (waits, milliseconds).
 *
 *   deno task bench:parallel [--quick]
 *
 * The driver starts each part under `mpirun` (this file with CSN_BENCH_ROLE set) and prints a summary.
 */
import { type Device, models, openDevice, tensor } from "../mod.ts";
import type { Tensor } from "../core/tensor.ts";
import { sum } from "../kernels/reduce.ts";
import { add, mul } from "../kernels/mod.ts";
import { bceWithLogits } from "../kernels/loss.ts";
import { seedInit } from "../nn/init.ts";
import { AdamW } from "../optim/adamw.ts";
import { Mpi } from "../parallel/mpi.ts";
import { Replicas } from "../parallel/replicas.ts";
import { mpirunArgs } from "../parallel/launch.ts";

const MODELS = [
  // Step times: lavapipe per sample (docs/perf.md: ir-CSN-152 fwd+bwd 1x3x40x256x256 ~100-150 s, the UNet
  // ~530 s); NVIDIA H200 at the seed's per-GPU batch (bench/gpu.sh, 2026-11-30).
  { name: "ir-CSN-152 classifier", floats: 28.9e6, lavapipeStepS: 125, h200StepS: 1.74, h200Batch: 16 },
  { name: "ir-CSN-50 UNet", floats: 21.9e6, lavapipeStepS: 530, h200StepS: 3.7, h200Batch: 4 },
];
const quick = Deno.args.includes("--quick");
const REPS = quick ? 2 : 4;
const median = (a: number[]) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)];

async function allreduceRole(mpi: Mpi) {
  const out: Record<string, unknown>[] = [];
  for (const m of MODELS) {
    const n = Math.round(m.floats);
    const buf = new Float32Array(n).fill(1);
    const whole: number[] = [], bucketed: number[] = [];
    const bucket = (25 * 1024 * 1024) / 4;
    for (let r = 0; r < REPS + 1; r++) {
      let t = performance.now();
      await mpi.allreduce(buf);
      if (r) whole.push(performance.now() - t);
      t = performance.now();
      const ps: Promise<void>[] = [];
      for (let o = 0; o < n; o += bucket) ps.push(mpi.allreduce(buf.subarray(o, Math.min(n, o + bucket))));
      await Promise.all(ps);
      if (r) bucketed.push(performance.now() - t);
    }
    out.push({ model: m.name, floats: n, wholeMs: median(whole), bucketedMs: median(bucketed) });
  }
  return out;
}

/** Parameters totalling `floats` (64 tensors) and a loss whose gradient is cheap: the transport alone. */
function fakeModel(device: Device, floats: number) {
  const k = 64, per = Math.ceil(floats / k);
  const params = Array.from(
    { length: k },
    () => tensor(new Float32Array(per), [per], { device, requiresGrad: true }),
  );
  const forward = () => {
    let l: Tensor | null = null;
    for (const p of params) l = l ? add(l, sum(mul(p, 1e-3))) : sum(mul(p, 1e-3));
    return l!;
  };
  return { params, forward };
}

async function overheadRole(mpi: Mpi | null, device: Device) {
  const out: Record<string, unknown>[] = [];
  const rep = mpi && mpi.size > 1 ? new Replicas(mpi, device) : null;
  for (const m of MODELS) {
    const { params, forward } = fakeModel(device, Math.round(m.floats));
    const times: number[] = [], sync: number[] = [];
    for (let r = 0; r < REPS + 1; r++) {
      for (const p of params) p.grad?.dispose(), p.grad = null;
      const t = performance.now();
      if (rep) {
        const s = await rep.step(params, forward, () => {});
        sync.push(s.syncMs);
      } else {
        const l = forward();
        l.backward();
        await l.item();
        l.dispose();
      }
      if (r) times.push(performance.now() - t);
    }
    for (const p of params) p.grad?.dispose(), p.dispose();
    out.push({ model: m.name, stepMs: median(times), syncMs: sync.length ? median(sync.slice(1)) : 0 });
  }
  return out;
}

async function tinyRole(mpi: Mpi | null, device: Device, syncBN: boolean) {
  const world = mpi?.size ?? 1, rank = mpi?.rank ?? 0;
  const B = 4, b = B / world, SH = [1, 8, 32, 32];
  seedInit(7);
  const model = new models.CSNClassifier({
    device,
    encoder: "r26ir",
    baseChannels: 4,
    numClasses: 8,
    dropout: 0,
  });
  model.train();
  const params = model.parameters();
  const opt = new AdamW([{ params }], { lr: 1e-3 });
  const rep = mpi && world > 1 ? new Replicas(mpi, device, { syncBN }) : null;
  rep?.convertSyncBatchNorm(model);
  await rep?.broadcastState(model);
  const per = SH.reduce((a, c) => a * c, 1);
  const x = Float32Array.from({ length: b * per }, (_, i) => Math.sin(i + rank * 7));
  const y = Float32Array.from({ length: b * 8 }, (_, i) => (i % 3 === 0 ? 1 : 0));
  const lossOf = () =>
    bceWithLogits(model.forward(tensor(x, [b, ...SH], { device })), tensor(y, [b, 8], { device }));
  const times: number[] = [], waits: number[] = [], syncMs: number[] = [];
  const steps = quick ? 3 : 6;
  for (let t = 0; t < steps + 2; t++) {
    opt.zeroGrad();
    const t0 = performance.now();
    if (rep) {
      const r = await rep.step(params, lossOf, () => opt.step());
      if (t >= 2) waits.push(r.waits), syncMs.push(r.syncMs);
    } else {
      const l = lossOf();
      l.backward();
      opt.step();
      await l.item();
      l.dispose();
    }
    if (t >= 2) times.push(performance.now() - t0);
  }
  opt.dispose();
  model.dispose();
  return {
    world,
    syncBN,
    stepMs: median(times),
    waits: waits.length ? median(waits) : 0,
    syncMs: syncMs.length ? median(syncMs) : 0,
    samplesPerSec: B / (median(times) / 1000),
  };
}

async function roleMain(role: string) {
  const mpi = Mpi.init();
  let result: unknown;
  if (role === "allreduce") result = await allreduceRole(mpi);
  else {
    const device = await openDevice();
    result = role === "overhead"
      ? await overheadRole(mpi, device)
      : await tinyRole(mpi, device, Deno.env.get("CSN_BENCH_SYNCBN") === "1");
    device.destroy();
  }
  if (mpi.rank === 0) console.log(`RESULT ${JSON.stringify(result)}`);
  await mpi.finalize();
}

const self = new URL(import.meta.url).pathname;

async function part(role: string, n: number, opts: { tcp?: boolean; env?: Record<string, string> } = {}) {
  const env = { XDG_RUNTIME_DIR: "/tmp", CSN_BENCH_ROLE: role, ...opts.env };
  const mca = opts.tcp ? ["--mca", "btl", "tcp,self"] : [];
  const [cmd, ...args] = [
    ...mpirunArgs(n, Object.keys(env)),
    ...mca,
    Deno.execPath(),
    "run",
    "-A",
    self,
    ...Deno.args,
  ];
  const o = await new Deno.Command(cmd, { args, env, stdout: "piped", stderr: "piped" }).output();
  const text = new TextDecoder().decode(o.stdout);
  const line = text.split("\n").find((l) => l.startsWith("RESULT "));
  if (!o.success || !line) throw new Error(`${role} x${n}: ${text}${new TextDecoder().decode(o.stderr)}`);
  return JSON.parse(line.slice(7));
}

async function driver() {
  const gb = (floats: number, ms: number) => (4 * floats) / 1e9 / (ms / 1000);
  console.log(
    `bench:parallel on ${Deno.hostname()}: ${navigator.hardwareConcurrency} cores; medians of ${REPS}`,
  );
  console.log("\nall-reduce (sum, f32, in place; algbw = bytes / time, busbw = algbw * 2(N-1)/N):");
  for (const tcp of [false, true]) {
    for (const r of await part("allreduce", 2, { tcp })) {
      console.log(
        `  N=2 ${tcp ? "TCP " : "shm "} ${r.model.padEnd(22)} ${
          (r.floats / 1e6).toFixed(1)
        } M floats: whole ` +
          `${r.wholeMs.toFixed(0)} ms (algbw ${gb(r.floats, r.wholeMs).toFixed(2)} GB/s), 25 MiB buckets ` +
          `${r.bucketedMs.toFixed(0)} ms (${gb(r.floats, r.bucketedMs).toFixed(2)} GB/s)`,
      );
    }
  }
  console.log(
    "\nper-step overhead of Replicas.step (readback + all-reduce + upload; trivial loss, N=2 vs N=1):",
  );
  const one = await part("overhead", 1), two = await part("overhead", 2);
  for (let i = 0; i < MODELS.length; i++) {
    const m = MODELS[i], over = (two[i].stepMs - one[i].stepMs) / 1000;
    console.log(
      `  ${m.name.padEnd(22)} N=1 ${one[i].stepMs.toFixed(0)} ms, N=2 ${two[i].stepMs.toFixed(0)} ms (sync ` +
        `${two[i].syncMs.toFixed(0)} ms): overhead ${over.toFixed(2)} s = ${
          (100 * over / (m.lavapipeStepS + over)).toFixed(2)
        }% ` +
        `of a lavapipe step (~${m.lavapipeStepS} s per sample)`,
    );
  }
  console.log(
    "\ntiny CSN classifier (r26ir width 4, global batch 4 on 1x8x32x32), replicas sharing the adapter:",
  );
  const t1 = await part("tiny", 1);
  const t2 = await part("tiny", 2, { env: { CSN_BENCH_SYNCBN: "1" } });
  const t2n = await part("tiny", 2, { env: { CSN_BENCH_SYNCBN: "0" } });
  for (const t of [t1, t2, t2n]) {
    console.log(
      `  N=${t.world}${t.world > 1 ? (t.syncBN ? " SyncBN   " : " local BN ") : "          "} ${
        t.stepMs.toFixed(0)
      } ms/step ` +
        `(${t.samplesPerSec.toFixed(2)} samples/s), ${t.waits} waits, ${t.syncMs.toFixed(0)} ms waiting`,
    );
  }
  console.log(
    `  SyncBN cost: ${(t2.stepMs - t2n.stepMs).toFixed(0)} ms/step (${t2.waits - t2n.waits} more waits); ` +
      `N=2/N=1 step time ${
        (t2.stepMs / t1.stepMs).toFixed(2)
      }x on ${navigator.hardwareConcurrency} shared cores`,
  );
  console.log(`\nRESULTS ${JSON.stringify({ one, two, t1, t2, t2n })}`);
}

const role = Deno.env.get("CSN_BENCH_ROLE");
if (role) await roleMain(role);
else await driver();
