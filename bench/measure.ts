/**
 * @file Measuring the adapter: its fp32 FMA peak and copy bandwidth (so every benchmark can print its
 * fraction of them), and a timer that cancels Deno's fixed ~11 ms wait per sync by differencing: the time of
 * 2k repetitions minus the time of k, divided by k.
 */
import type { Device } from "../core/device.ts";
import { Tensor } from "../core/tensor.ts";
import { launch, u } from "../kernels/codegen.ts";

/** Seconds per call of `fn` (which only records GPU work), by differencing two batch sizes; median of 3. */
export async function timePerCall(device: Device, fn: () => void, reps = 4): Promise<number> {
  fn();
  await device.sync();
  const run = async (k: number) => {
    const t0 = performance.now();
    for (let i = 0; i < k; i++) fn();
    await device.sync();
    return (performance.now() - t0) / 1000;
  };
  const samples: number[] = [];
  for (let s = 0; s < 3; s++) {
    const a = await run(reps);
    const b = await run(2 * reps);
    samples.push(Math.max(1e-9, (b - a) / reps));
  }
  samples.sort((x, y) => x - y);
  return samples[1];
}

/** Measured fp32 FMA peak in GFLOP/s: straight-line (no loop) independent vec4 chains, best of two shapes. */
export async function measurePeakGflops(device: Device): Promise<number> {
  const out = Tensor.empty(device, [65536], "f32", "peak");
  let best = 0;
  for (const [chains, steps] of [[4, 128], [6, 64]]) {
    const groups = 2048, wg = 64;
    const init = [...Array(chains).keys()].map((k) =>
      // Every lane and component differs, so LLVM can neither scalarise nor merge the chains.
      `var a${k} = vec4<f32>(0.1, 0.2, 0.3, 0.4) + f32(gid % 997u) * 1e-4 + ${(0.013 * k).toFixed(3)};`
    ).join("\n  ");
    const step = [...Array(chains).keys()].map((k) => `a${k} = fma(a${k}, a${k}, c);`).join(" ");
    const body = `  let c = vec4<f32>(-1.9, -1.8, -1.7, -1.6);
  ${init}
  ${Array(steps).fill(step).join("\n  ")}
  out_st(gid % 65536u, dot(${[...Array(chains).keys()].map((k) => `a${k}`).join(" + ")}, vec4<f32>(1.0)));`;
    const flops = groups * wg * chains * steps * 4 * 2;
    const t = await timePerCall(
      device,
      () => launch({ op: "peak", args: [{ name: "out", t: out, write: true }], wg, groups, body }),
      3,
    );
    best = Math.max(best, flops / t / 1e9);
  }
  out.dispose();
  return best;
}

/** Measured copy bandwidth in GB/s (bytes read + written), 4 consecutive vec4 per invocation. */
export async function measureCopyGBs(device: Device, mib = 64): Promise<number> {
  const n = (mib * 2 ** 20) / 4;
  const a = Tensor.empty(device, [n], "f32", "copy"), b = Tensor.empty(device, [n], "f32", "copy");
  const n4 = n / 4;
  const t = await timePerCall(device, () =>
    launch({
      op: "copy",
      args: [{ name: "a", t: a, vec4: true }, { name: "b", t: b, write: true, vec4: true }],
      wg: 64,
      groups: Math.ceil(n4 / 4 / 64),
      body: `  for (var e = 0u; e < 4u; e = e + 1u) { let i = gid * 4u + e; if (i < ${
        u(n4)
      }) { b_st(i, a_ld(i)); } }`,
    }), 3);
  a.dispose();
  b.dispose();
  return (2 * n * 4) / t / 1e9;
}

/** Formats a rate with its fraction of a reference. */
export function frac(v: number, ref: number): string {
  return `${v.toFixed(1)} (${((100 * v) / ref).toFixed(0)}%)`;
}
