/**
 * Engine-core throughput: elementwise bandwidth (GB/s) and matmul (GFLOP/s), each beside the adapter's
 * measured fp32 FMA peak and copy bandwidth. A summary table is printed before Deno's own timings.
 *
 *   deno task bench            (all benches)
 */
import { F, openDevice, randn } from "../mod.ts";
import { driverInfo, frac, measureCopyGBs, measurePeakGflops, timePerCall } from "./measure.ts";

const device = await openDevice();
const peak = await measurePeakGflops(device);
const copy = await measureCopyGBs(device);

const n = 16 * 2 ** 20; // 16M floats = 64 MiB per tensor
const x = randn([n], { device, seed: 1 }), y = randn([n], { device, seed: 2 });
const m1 = randn([1024, 1024], { device, seed: 3 }), m2 = randn([1024, 1024], { device, seed: 4 });
const tallA = randn([16384, 256], { device, seed: 5 }), tallB = randn([256, 256], { device, seed: 6 });

const rows: string[][] = [];
async function measure(name: string, fn: () => void, work: number, unit: "GB/s" | "GFLOP/s") {
  const t = await timePerCall(device, () => {
    const r = fn() as unknown as { dispose(): void } | undefined;
    r?.dispose();
  });
  const rate = work / t / 1e9;
  rows.push([name, `${(t * 1e3).toFixed(2)} ms`, `${frac(rate, unit === "GB/s" ? copy : peak)} ${unit}`]);
}
await measure("add 16M f32 (vec4)", () => F.add(x, y) as unknown as void, 3 * n * 4, "GB/s");
await measure("relu 16M f32 (vec4)", () => F.relu(x) as unknown as void, 2 * n * 4, "GB/s");
await measure(
  "add 4096x4096 + 4096 (broadcast)",
  () => F.add(x.reshape([4096, 4096]), y.reshape([4096, 4096])) as unknown as void,
  3 * n * 4,
  "GB/s",
);
await measure("matmul 1024^3", () => F.matmul(m1, m2) as unknown as void, 2 * 1024 ** 3, "GFLOP/s");
await measure(
  "matmul 16384x256 @ 256x256 (tall)",
  () => F.matmul(tallA, tallB) as unknown as void,
  2 * 16384 * 256 * 256,
  "GFLOP/s",
);
await measure(
  "matmul 1024^3 transA",
  () => F.matmul(m1, m2, { transA: true }) as unknown as void,
  2 * 1024 ** 3,
  "GFLOP/s",
);

console.log(
  `\n${driverInfo(device).label}: measured fp32 FMA peak ${peak.toFixed(1)} GFLOP/s, copy ${
    copy.toFixed(1)
  } GB/s`,
);
const w = [38, 12, 28];
console.log(["case", "time", "rate (of measured peak)"].map((h, i) => h.padEnd(w[i])).join(" | "));
for (const r of rows) console.log(r.map((c, i) => c.padEnd(w[i])).join(" | "));
console.log("");

Deno.bench({ name: "add 16M f32", group: "elementwise", n: 5, warmup: 1 }, async () => {
  F.add(x, y).dispose();
  await device.sync();
});
Deno.bench({ name: "matmul 1024^3", group: "matmul", n: 5, warmup: 1 }, async () => {
  F.matmul(m1, m2).dispose();
  await device.sync();
});
Deno.bench({ name: "matmul 16384x256x256", group: "matmul", n: 5, warmup: 1 }, async () => {
  F.matmul(tallA, tallB).dispose();
  await device.sync();
});
