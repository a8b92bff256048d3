/**
 * The GEMMs that the CSN-152 classifier and the ir-CSN-50 UNet encoder run as pointwise convs
 * ([C_out x C_in] @ [C_in x DHW] per sample), forward and both gradients, through the engine's `gemm` with the
 * operand layouts the pointwise conv uses: forward W @ X, input gradient W^T @ gY, weight gradient gY @ X^T.
 * For each shape: GFLOP/s, % of the adapter's best measured FMA peak, and the shape's count in the model, so
 * the model's time in its pointwise GEMMs can be estimated.
 *
 * Two clocks: the shortest GPU-timestamp time of several calls (bench/measure.ts) and process CPU time
 * (user + sys from /proc/self/stat, lavapipe runs in this process) scaled to the 2 cores. The CPU-time rate
 * is what the kernel would reach on an idle machine; it is the one to compare across runs when other jobs
 * load the machine.
 *
 *   deno task bench:gemm [--model cls|seg|both] [--max-n 40960] [--only substring] [--profile cpu|gpu]
 */
import { openDevice, randn } from "../mod.ts";
import type { Device } from "../core/device.ts";
import { Tensor } from "../core/tensor.ts";
import { launch } from "../kernels/codegen.ts";
import { gemm } from "../kernels/matmul.ts";
import {
  bestPeak,
  driverInfo,
  measurePeakVariants,
  minGpuSeconds,
  timedTwin,
  timePerCall,
} from "./measure.ts";

const argv = Deno.args;
const opt = (k: string) => (argv.includes(k) ? argv[argv.indexOf(k) + 1] : undefined);
const which = opt("--model") ?? "both";
const maxN = Number(opt("--max-n") ?? 40960);
const only = opt("--only");
const profile = opt("--profile") as "cpu" | "gpu" | undefined;

/** One pointwise-conv GEMM of a model: O x C weights over S positions, `count` times per sample. */
interface Shape {
  model: string;
  O: number;
  C: number;
  S: number;
  count: number;
}

/**
 * The pointwise convs of a CSN backbone (ir bottleneck: conv1 C->p at the stage's input resolution, conv3
 * p->4p and the strided downsample at its output resolution), positions per stage from the input size.
 */
function csnShapes(model: string, blocks: number[], stagePositions: number[]): Shape[] {
  const out = new Map<string, Shape>();
  const add = (O: number, C: number, S: number) => {
    const k = `${O}x${C}x${S}`;
    const s = out.get(k);
    if (s) s.count++;
    else out.set(k, { model, O, C, S, count: 1 });
  };
  let cin = 64;
  blocks.forEach((n, i) => {
    const p = 64 * 2 ** i;
    const sIn = stagePositions[Math.max(0, i - 1)], sOut = stagePositions[i];
    add(p, cin, i === 0 ? sOut : sIn);
    add(4 * p, p, sOut);
    add(4 * p, cin, sOut);
    for (let b = 1; b < n; b++) {
      add(p, 4 * p, sOut);
      add(4 * p, p, sOut);
    }
    cin = 4 * p;
  });
  return [...out.values()];
}

const shapes: Shape[] = [];
// Classifier: 3x40x256x256 crop; stem stride (1,2,2) + max-pool (1,2,2) -> 40x64x64, then /2 per stage.
if (which !== "seg") shapes.push(...csnShapes("ir-CSN-152 cls", [3, 8, 36, 3], [163840, 20480, 2560, 320]));
// UNet encoder: 1x64x256x256 -> stem 64x128x128, pool -> 64x64x64, then /2 per stage.
if (which !== "cls") shapes.push(...csnShapes("ir-CSN-50 UNet", [3, 4, 6, 3], [262144, 32768, 4096, 512]));

const device = await openDevice({ profile });
const timed = await timedTwin(device);
const drv = driverInfo(device);
const variants = await measurePeakVariants(device);
const peak = bestPeak(variants);

function cpuSeconds(): number {
  try {
    const f = Deno.readTextFileSync("/proc/self/stat").split(") ")[1].split(" ");
    return (Number(f[11]) + Number(f[12])) / 100;
  } catch {
    return NaN;
  }
}

/**
 * FMA peak by CPU time (GFLOP per 2 CPU-seconds): the buffer-fed chain kernel of bench/measure.ts's
 * "buffer-addend" variant (4 or 6 independent vec4 chains, the addend read from a buffer), best of the two.
 */
async function cpuTimePeak(d: Device): Promise<number> {
  const out = Tensor.empty(d, [65536], "f32", "peak"), src = randn([4096], { device: d, seed: 4, std: 0.01 });
  let best = 0;
  for (const [chains, steps] of [[4, 128], [6, 64]]) {
    const ch = [...Array(chains).keys()];
    const body = `  let c = src_ld(wg % 1024u) - vec4<f32>(1.8);
  ${
      ch.map((k) => `var a${k} = vec4<f32>(0.1, 0.2, 0.3, 0.4) + f32(gid % 997u) * 1e-4 + ${0.013 * k};`)
        .join(" ")
    }
  ${Array(steps).fill(ch.map((k) => `a${k} = fma(a${k}, a${k}, c);`).join(" ")).join("\n  ")}
  out_st(gid % 65536u, dot(${ch.map((k) => `a${k}`).join(" + ")}, vec4<f32>(1.0)));`;
    const groups = 4096, flop = groups * 64 * chains * steps * 8;
    const run = () =>
      launch({
        op: "peak_cpu_time",
        args: [{ name: "src", t: src, vec4: true }, { name: "out", t: out, write: true }],
        wg: 64,
        groups,
        body,
      });
    const [, tc] = await time(d, run);
    best = Math.max(best, flop / tc / 1e9);
  }
  out.dispose();
  src.dispose();
  return best;
}

/** [wall-clock seconds (GPU timestamps, min of 4, else differencing), CPU seconds / 2] per call of `fn`. */
async function time(d: Device, fn: () => void): Promise<[number, number]> {
  const wall = d.profiler ? await minGpuSeconds(d, fn, 4) : await timePerCall(d, fn, 2);
  // About half a second of work or 20 calls, so the 10 ms tick of /proc/self/stat matters little.
  const reps = Math.max(2, Math.min(20, Math.ceil(0.5 / Math.max(wall, 1e-3))));
  const c0 = cpuSeconds();
  for (let i = 0; i < reps; i++) fn();
  await d.sync();
  return [wall, (cpuSeconds() - c0) / reps / 2];
}

const d = timed ?? device;
const peakCpu = await cpuTimePeak(d);
console.log(`${drv.label}; profile "${device.profile}"`);
console.log(`FMA peak variants: ${variants.map((v) => `${v.name} ${v.gflops.toFixed(1)}`).join(", ")}`);
console.log(
  `best peak ${peak.toFixed(1)} GFLOP/s by GPU timestamps, ${peakCpu.toFixed(1)} GFLOP/s by CPU time ` +
    `(buffer-fed vec4 chains); N (positions) capped at ${maxN} per measured shape\n`,
);
const cols = [
  "model",
  "O x C x S (count)",
  "pass",
  "ms",
  "GFLOP/s",
  "% peak",
  "cpu-time GFLOP/s",
  "% cpu-t. peak",
];
const widths = [16, 26, 6, 9, 8, 7, 17, 13];
const line = (cells: string[]) => console.log(cells.map((c, i) => c.padEnd(widths[i])).join(" | "));
line(cols);
const est: Record<string, { flop: number; s: number; sCpu: number }> = {};
for (const sh of shapes) {
  const label = `${sh.O}x${sh.C}x${sh.S} (${sh.count})`;
  if (only && !label.includes(only)) continue;
  const n = Math.min(sh.S, maxN);
  const w = randn([sh.O, sh.C], { device: d, seed: 1, std: 0.1 });
  const x = randn([1, sh.C, n], { device: d, seed: 2 });
  const gy = randn([1, sh.O, n], { device: d, seed: 3 });
  const passes: [string, () => Tensor][] = [
    ["fwd", () => gemm("bench", w, x, false, false)],
    ["dX", () => gemm("bench", w, gy, true, false)],
    ["dW", () => gemm("bench", gy, x, false, true)],
  ];
  const flop = 2 * sh.O * sh.C * n;
  for (const [pass, fn] of passes) {
    const [t, tc] = await time(d, () => fn().dispose());
    // On a real GPU the process's CPU time says nothing (and is often 0 at the 10 ms tick): shown as "-".
    const g = flop / t / 1e9, gc = tc > 0 && isFinite(peakCpu) ? flop / tc / 1e9 : NaN;
    line([
      sh.model,
      label,
      pass,
      (t * 1e3).toFixed(1),
      g.toFixed(1),
      (100 * g / peak).toFixed(1),
      isNaN(gc) ? "-" : gc.toFixed(1),
      isNaN(gc) ? "-" : (100 * gc / peakCpu).toFixed(1),
    ]);
    const e = est[sh.model] ??= { flop: 0, s: 0, sCpu: 0 };
    const scale = sh.count * sh.S / n;
    e.flop += flop * scale;
    e.s += t * scale;
    e.sCpu += tc * scale;
  }
  for (const t of [w, x, gy]) t.dispose();
}
console.log();
for (const [m, e] of Object.entries(est)) {
  console.log(
    `${m}: pointwise GEMMs of one sample, fwd + both gradients: ${(e.flop / 1e9).toFixed(1)} GFLOP, ` +
      `${e.s.toFixed(1)} s at the measured rates (${(e.flop / e.s / 1e9).toFixed(1)} GFLOP/s), ` +
      `${e.sCpu.toFixed(1)} s by CPU time (${(e.flop / e.sCpu / 1e9).toFixed(1)} GFLOP/s, ` +
      `${(100 * e.flop / e.sCpu / 1e9 / peakCpu).toFixed(1)} % of the CPU-time peak)`,
  );
}
if (timed && timed !== device) timed.destroy();
device.destroy();
