/**
 * The GPU machine's measurements, one part per process so that a stall or an out-of-memory in one part
 * cannot take the others' figures with it (`bench/gpu.sh` runs them all under time limits):
 *
 *   deno run -A bench/gpu.ts --part info|kernels|train [--model cls|unet] [--batch B] [--steps 3] [--amp]
 *                            [--results FILE.jsonl]
 *
 * - info: the adapter (name, features, limits, kernel profile), its measured FMA peak and copy bandwidth.
 * - kernels: GEMMs (square and the pointwise-conv shapes of the CSN), the conv bench cases at a GPU-sized
 *   batch, BatchNorm3d train forward+backward, the fused AdamW step on the ir-CSN-152's 28.9 M parameters.
 * - train: one optimizer step (forward, loss, backward, AdamW) of a full-size model at the seed's input size:
 *   `cls` = ir-CSN-152 on Bx3x40x256x256 (seed: B = 16 per GPU), `unet` = ir-CSN-50 UNet on Bx1x64x256x256
 *   (seed: B = 4 per GPU). Step 1 includes pipeline compilation; the warm figure is the best of steps 2..
 *   `--amp`: mixed precision as `train --amp` runs it (f16 convs/linears under autocast, GradScaler, one
 *   readback a step); records say `precision: "f16"` (or "f32", also where the adapter lacks shader-f16).
 *   Under `CSN_PROFILE=1` (timestamp queries around every dispatch, so its step times are not the warm
 *   figure) it also records the GPU time per kernel of the steps after the first, longest first.
 *   Under `CSN_BENCHMARK=1` (core/tuner.ts) step 1 times the GEMM and conv tiles of every shape and step 2
 *   compiles the chosen ones, so the warm figure is the best of steps 3..; kernels and train parts then also
 *   record the tuner's decisions.
 *
 * Every record is printed and appended as one JSON line to `--results`. Times of kernels come from
 * differencing two batch sizes chosen so that the shorter one runs for at least ~0.2 s: Deno's GPU wait polls
 * every ~10 ms, which would otherwise swamp sub-millisecond kernels.
 */
import { autocast, F, hasF16, models, nn, openDevice, optim, randn, tidy } from "../mod.ts";
import type { Device } from "../core/device.ts";

type Triple = [number, number, number];
import { measureCopyGBs, measurePeakGflops } from "./measure.ts";
import { gemmTile } from "../kernels/matmul.ts";

// No flag library: this file imports the engine only, so the GPU machine needs no npm cache.
const flag = (k: string, d: string) => {
  const i = Deno.args.indexOf(`--${k}`);
  return i >= 0 && i + 1 < Deno.args.length ? Deno.args[i + 1] : d;
};
const f = {
  part: flag("part", "info"),
  model: flag("model", "cls"),
  batch: Number(flag("batch", "0")),
  steps: Number(flag("steps", "3")),
  results: flag("results", ""),
  /** Tiny sizes, to check this script on lavapipe before spending GPU time on it. */
  smoke: Deno.args.includes("--smoke"),
  /** kernels: which groups (gemm, conv, bn, adamw). */
  only: flag("only", "gemm,conv,bn,adamw").split(","),
  /** train: mixed precision (f16 convs and linears, loss scaling). */
  amp: Deno.args.includes("--amp"),
};
const S = f.smoke ? 8 : 1;

const device = await openDevice();
const record = async (r: Record<string, unknown>) => {
  const line = JSON.stringify({ date: new Date().toISOString(), adapter: device.info.description, ...r });
  console.log(line);
  if (f.results) await Deno.writeTextFile(f.results, line + "\n", { append: true });
};

/** Under CSN_BENCHMARK=1: prints the tuner's table and records every decision (candidates, ms, chosen). */
async function recordTuning(what: string): Promise<void> {
  if (!device.tuner) return;
  await device.sync();
  console.log(`Tuned variants, ${what}:\n${device.tuner.report(40)}`);
  await record({ part: f.part, what: "tuning", of: what, decisions: device.tuner.decisions() });
}

/** Seconds per call of `fn` by differencing k and 2k calls, k grown until k calls take >= `minS`. */
async function timeCall(dev: Device, fn: () => void, minS = f.smoke ? 0.02 : 0.2): Promise<number> {
  fn();
  await dev.sync();
  const run = async (k: number) => {
    const t0 = performance.now();
    for (let i = 0; i < k; i++) fn();
    await dev.sync();
    return (performance.now() - t0) / 1000;
  };
  let k = 1;
  while (k < 4096) {
    const t = await run(k);
    if (t >= minS) break;
    k = Math.min(4096, Math.max(2 * k, Math.ceil(k * minS / Math.max(t, 1e-4))));
  }
  const s: number[] = [];
  for (let i = 0; i < 3; i++) {
    const a = await run(k), b = await run(2 * k);
    // A difference swamped by the wait's jitter falls back to the upper bound (the 2k run's time per call).
    s.push((b - a) / k > 0.05 * b / (2 * k) ? (b - a) / k : b / (2 * k));
  }
  s.sort((x, y) => x - y);
  return s[1];
}

const part = f.part as string;
if (part === "info") {
  const t0 = performance.now();
  const peak = await measurePeakGflops(device);
  const copy = await measureCopyGBs(device, 256);
  await record({
    part,
    info: device.info,
    peakGflops: peak,
    copyGBs: copy,
    seconds: (performance.now() - t0) / 1000,
  });
} else if (part === "kernels") {
  const peak = await measurePeakGflops(device);
  const copy = await measureCopyGBs(device, 256);
  await record({ part, what: "peak", peakGflops: peak, copyGBs: copy });
  // GEMMs: square, the CSN's pointwise convs as [Cout x Cin] @ [Cin x N*D*H*W], and their weight gradients
  // as [Cout x N*D*H*W] @ [Cin x N*D*H*W]^T (K = positions; "^T" rows: B stored along K, as the convs' are).
  const gemms: [string, number, number, number][] = f.smoke
    ? [["pw 64->256", 256, 64, 4096], ["pw dw 64->256 ^T", 256, 4096, 64]]
    : [
      ["square 4096", 4096, 4096, 4096],
      ["square 8192", 8192, 8192, 8192],
      ["pw 64->256 (layer1, 16x40x64x64 voxels)", 256, 64, 16 * 40 * 64 * 64 / 4],
      ["pw 256->64", 64, 256, 16 * 40 * 64 * 64 / 4],
      ["pw 512->128 (layer2)", 128, 512, 16 * 20 * 32 * 32],
      ["pw 1024->256 (layer3)", 256, 1024, 16 * 10 * 16 * 16],
      ["pw 2048->512 (layer4)", 512, 2048, 16 * 5 * 8 * 8],
      ["pw dw 64->256 (layer1) ^T", 256, 16 * 40 * 64 * 64 / 4, 64],
      ["pw dw 1024->256 (layer3) ^T", 256, 16 * 10 * 16 * 16, 1024],
    ];
  for (const [name, M0, K0, N0] of f.only.includes("gemm") ? gemms : []) {
    const [M, K, N] = [M0, K0, N0].map((v) => Math.max(4, Math.round(v / S)));
    try {
      const transB = name.endsWith("^T");
      const a = randn([M, K], { device, seed: 1 }), b = randn(transB ? [N, K] : [K, N], { device, seed: 2 });
      const s = await timeCall(device, () => F.matmul(a, b, { transB }).dispose());
      // Under CSN_BENCHMARK=1 the tile the tuner chose (its first call timed them all), else the rule's.
      const tuned = device.tuner?.decisions().find((d) =>
        d.key.includes(`[${a.shape}]`) && d.key.includes(`[${b.shape}]`)
      );
      const tile = tuned
        ? tuned.candidates[tuned.chosen]
        : device.profile === "gpu"
        ? gemmTile(M, N, K)
        : null;
      await record({ part, what: "gemm", name, M, K, N, tile, ms: s * 1e3, gflops: 2 * M * K * N / s / 1e9 });
      a.dispose();
      b.dispose();
    } catch (e) {
      await record({ part, what: "gemm", name, error: String(e) });
    }
  }
  const cases = JSON.parse(
    await Deno.readTextFile(new URL("./conv_cases.json", import.meta.url)),
  ) as {
    name: string;
    x: number[];
    w: number[];
    stride: number[];
    padding: number[];
    groups: number;
    noInputGrad?: boolean;
  }[];
  for (const c of !f.only.includes("conv") ? [] : f.smoke ? cases.slice(-3) : cases) {
    try {
      const xs = [f.smoke ? 1 : 8, ...c.x.slice(1).map((v, i) => i === 0 ? v : Math.ceil(v / Math.sqrt(S)))];
      const x = randn(xs, { device, seed: 1 });
      const w = randn(c.w, { device, seed: 2, std: 0.1 });
      const opts = { stride: c.stride as Triple, padding: c.padding as Triple, groups: c.groups };
      const y0 = F.conv3d(x, w, null, opts);
      const macs = y0.numel() * c.w[1] * c.w[2] * c.w[3] * c.w[4];
      const ioBytes = 4 * (x.numel() + y0.numel());
      y0.dispose();
      const fwd = await timeCall(device, () => F.conv3d(x, w, null, opts).dispose());
      if (!c.noInputGrad) x.requireGrad();
      w.requireGrad();
      const fb = await timeCall(device, () =>
        tidy(() => {
          F.sum(F.conv3d(x, w, null, opts)).backward();
          w.grad?.dispose();
          w.grad = null;
          if (x.grad) {
            x.grad.dispose();
            x.grad = null;
          }
        }));
      const flopsFb = 2 * macs * (c.noInputGrad ? 2 : 3);
      await record({
        part,
        what: "conv",
        name: c.name.replace(/^(\S+)/, "$1"),
        x: xs,
        fwdMs: fwd * 1e3,
        fwdGflops: 2 * macs / fwd / 1e9,
        fwdGBs: ioBytes / fwd / 1e9,
        fwdBwdMs: fb * 1e3,
        fwdBwdGflops: flopsFb / fb / 1e9,
      });
      x.dispose();
      w.dispose();
    } catch (e) {
      await record({ part, what: "conv", name: c.name, error: String(e) });
    }
  }
  if (f.only.includes("bn")) {
    const shape = f.smoke ? [2, 16, 5, 8, 8] : [16, 256, 10, 64, 64];
    const x = randn(shape, { device, seed: 3 });
    const C = shape[1];
    const g = randn([C], { device, seed: 4 }), b = randn([C], { device, seed: 5 });
    const rm = randn([C], { device, seed: 6 }), rv = F.abs(randn([C], { device, seed: 7 }));
    const fw = await timeCall(
      device,
      () => F.batchNorm3d(x, g, b, rm, rv, { training: true, eps: 1e-3 }).dispose(),
    );
    x.requireGrad();
    g.requireGrad();
    b.requireGrad();
    const fb = await timeCall(device, () =>
      tidy(() => {
        F.sum(F.batchNorm3d(x, g, b, rm, rv, { training: true, eps: 1e-3 })).backward();
        for (const t of [x, g, b]) {
          t.grad?.dispose();
          t.grad = null;
        }
      }));
    const n = x.numel() * 4;
    await record({
      part,
      what: "batchnorm",
      shape,
      fwdMs: fw * 1e3,
      fwdGBs: 3 * n / fw / 1e9,
      fwdBwdMs: fb * 1e3,
      fwdBwdGBs: 8 * n / fb / 1e9,
    });
  }
  if (f.only.includes("adamw")) {
    const n = f.smoke ? 100_000 : 28_900_360;
    const p = randn([n], { device, seed: 8 }).requireGrad();
    p.grad = randn([n], { device, seed: 9 });
    const opt = new optim.AdamW([p], { lr: 1e-4, weightDecay: 0.01 });
    const s = await timeCall(device, () => opt.step());
    await record({ part, what: "adamw", params: n, ms: s * 1e3, GBs: 28 * n / s / 1e9 });
  }
  await recordTuning("kernels");
} else if (part === "train") {
  const unet = f.model === "unet";
  const batch = f.batch || (unet ? 4 : 16);
  const shape = unet ? [batch, 1, 64, 256 / S, 256 / S] : [batch, 3, 40, 256 / S, 256 / S];
  nn.seedInit(1);
  const model = unet
    ? new models.CSNUNet({ device, encoder: "r50ir" })
    : new models.CSNClassifier({ device, encoder: "r152ir" });
  model.train();
  const opt = new optim.AdamW(model.parameters(), { lr: 1e-4, weightDecay: 0.01 });
  const modelName = unet ? "ir-CSN-50 UNet" : "ir-CSN-152 classifier";
  const half = f.amp && hasF16(device);
  const precision = half ? "f16" : "f32";
  if (f.amp && !half) console.warn(`--amp: ${device.info.description} has no shader-f16; measuring f32`);
  const scaler = half ? new optim.GradScaler() : null;
  const params = model.parameters();
  const times: number[] = [];
  // The JavaScript and WebGPU encoding of a step, before its readback waits (f32 path): against the step's
  // wall time it says how much of it the host could still hide.
  const hostTimes: number[] = [];
  const base = device.stats();
  let pipelinesAfterFirst = 0;
  for (let s = 0; s < f.steps; s++) {
    const t0 = performance.now();
    const loss = scaler
      ? await (async () => {
        // As train/trainer.ts: one readback of [loss, found-inf], then step or skip.
        const rep = tidy(() => {
          const y = autocast(() => model.forward(randn(shape, { device, seed: 10 + s })));
          const l = F.mean(F.mul(y, y));
          scaler.scaleLoss(l).backward();
          return scaler.unscale(params, l);
        });
        const r = await scaler.read(rep);
        scaler.step(r, () => tidy(() => opt.step()));
        opt.zeroGrad();
        return r.loss;
      })()
      : await tidy(async () => {
        const x = randn(shape, { device, seed: 10 + s });
        const y = model.forward(x);
        const l = F.mean(F.mul(y, y));
        l.backward();
        opt.step();
        opt.zeroGrad();
        hostTimes.push((performance.now() - t0) / 1000);
        return await l.item();
      });
    times.push((performance.now() - t0) / 1000);
    if (s === 0) pipelinesAfterFirst = device.stats().pipelines;
    // The first step compiles; the profile counts the steps after it.
    if (s === 0 && f.steps > 1) device.profiler?.reset();
    // One line per step too, so that a step cut off by the time limit keeps those before it.
    await record({
      part,
      what: "step",
      model: modelName,
      precision,
      batch,
      step: s + 1,
      seconds: times[s],
      ...(hostTimes[s] !== undefined ? { hostSeconds: hostTimes[s] } : {}),
      loss,
      pipelines: device.stats().pipelines - base.pipelines,
      peakGiB: device.stats().peakBytes / 2 ** 30,
    });
  }
  if (device.profiler) {
    const which = `${modelName}, ${precision}`;
    console.log(`GPU time by kernel, ${which}, steps 2..${f.steps}:\n${await device.profiler.report(25)}`);
    const stats = device.profiler.stats();
    const steps = Math.max(1, f.steps - 1);
    await record({
      part,
      what: "profile",
      model: modelName,
      precision,
      batch,
      steps,
      gpuMsPerStep: stats.reduce((t, k) => t + k.ms, 0) / steps,
      kernels: stats.slice(0, 40).map((k) => ({
        name: k.name.length > 80 ? `${k.name.slice(0, 77)}...` : k.name,
        count: k.count / steps,
        msPerStep: k.ms / steps,
        share: k.share,
        gflops: k.gflops,
        gbs: k.gbs,
      })),
    });
  }
  await recordTuning(`${modelName}, ${precision}`);
  const st = device.stats();
  // Tuning (CSN_BENCHMARK=1) times the variants in step 1 and compiles the chosen ones in step 2.
  const warmFrom = device.tuner ? 2 : 1;
  const warm = times.length > warmFrom ? Math.min(...times.slice(warmFrom)) : NaN;
  await record({
    part,
    model: modelName,
    precision,
    profiled: !!device.profiler,
    tuned: !!device.tuner,
    skippedSteps: scaler?.skipped ?? 0,
    shape,
    batch,
    stepSeconds: times,
    warmStepSeconds: warm,
    ...(hostTimes.length > warmFrom ? { warmHostSeconds: Math.min(...hostTimes.slice(warmFrom)) } : {}),
    samplesPerSecond: batch / warm,
    peakGiB: st.peakBytes / 2 ** 30,
    pipelines: pipelinesAfterFirst - base.pipelines,
    dispatchesPerStep: (st.dispatches - base.dispatches) / times.length,
    submitsPerStep: (st.submits - base.submits) / times.length,
    submitEvery: device.info.submitEvery,
  });
  model.dispose();
} else {
  throw new Error(`bench/gpu.ts: unknown --part "${part}" (info | kernels | train)`);
}
device.destroy();
