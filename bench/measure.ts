/**
 * @file Measuring the adapter: its fp32 FMA peak and copy bandwidth (so every benchmark can print its
 * fraction of them), and a timer that cancels Deno's fixed ~11 ms wait per sync by differencing: the time of
 * 2k repetitions minus the time of k, divided by k. The peak and the bandwidth are timed by GPU timestamps
 * where the adapter has them (the shortest of several dispatches), which other processes on a loaded machine
 * disturb far less than wall-clock differencing. {@link driverInfo} names the Vulkan driver behind the
 * adapter, which WebGPU does not expose (Mesa 22 and 25 both call themselves "llvmpipe (LLVM 15.0.6)").
 */
import { type Device, openDevice } from "../core/device.ts";
import { Tensor, tensor } from "../core/tensor.ts";
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

/**
 * A device on the same adapter with profiling on (`device` itself if it already profiles), or null where the
 * adapter lacks `timestamp-query`. The caller destroys it unless it is `device`.
 */
export async function timedTwin(device: Device): Promise<Device | null> {
  if (device.profiler) return device;
  if (!device.info.features.includes("timestamp-query")) return null;
  return await openDevice({
    adapter: device.info.description,
    fallback: device.info.isFallbackAdapter,
    profile: device.profile,
    profiling: true,
  });
}

/**
 * Shortest GPU time in seconds of one call of `fn` (which records GPU work on `device`, a profiling device)
 * over `n` calls after a warm-up call (lavapipe compiles a pipeline at its first dispatch), by timestamps.
 */
export async function minGpuSeconds(device: Device, fn: () => void, n = 5): Promise<number> {
  const p = device.profiler;
  if (!p) throw new Error("minGpuSeconds: the device does not profile (open it with { profiling: true })");
  fn();
  await device.sync();
  let best = Infinity;
  for (let i = 0; i < n; i++) {
    p.reset();
    fn();
    await device.sync();
    best = Math.min(best, p.stats().reduce((t, k) => t + k.ms, 0) / 1e3);
  }
  return best;
}

/** Seconds per call of `fn(d)` on a profiling twin of `device` by timestamps, else by {@link timePerCall}. */
async function timeKernel(device: Device, twin: Device | null, fn: (d: Device) => void): Promise<number> {
  return twin ? await minGpuSeconds(twin, () => fn(twin)) : await timePerCall(device, () => fn(device), 6);
}

/** One variant of the FMA peak kernel and its measured rate. */
export interface PeakVariant {
  /** Short name, e.g. "outer-product R8". */
  name: string;
  /** What the kernel's inner step is. */
  what: string;
  gflops: number;
}

// About 20 ms of work per call at 50 GFLOP/s, so that differencing is not lost in the ~11 ms sync jitter.
const PEAK_GROUPS = 4096, PEAK_WG = 64;

/** Rate of one straight-line FMA kernel (no loop) over 4096 x 64 lanes doing `fmas` scalar FMAs each. */
async function peakKernel(
  device: Device,
  twin: Device | null,
  op: string,
  body: string,
  fmas: number,
): Promise<number> {
  const d = twin ?? device;
  const out = Tensor.empty(d, [65536], "f32", "peak");
  // Values in [-1.9, -1.6]: the chains a <- a*a + c stay bounded for c in [-2, 0.25].
  const src = tensor(Float32Array.from({ length: 4096 }, (_, i) => -1.6 - 0.3 * ((i * 0.618) % 1)), {
    device: d,
  });
  const flops = PEAK_GROUPS * PEAK_WG * fmas * 2;
  const t = await timeKernel(device, twin, () =>
    launch({
      op,
      args: [{ name: "src", t: src, vec4: true }, { name: "out", t: out, write: true }],
      wg: PEAK_WG,
      groups: PEAK_GROUPS,
      body,
    }));
  out.dispose();
  src.dispose();
  return flops / t / 1e9;
}

const range = (n: number) => [...Array(n).keys()];

/** The kinds of FMA chain {@link measurePeakVariants} measures. */
export type PeakKind = "const-addend" | "buffer-addend" | "uniform-scale";

function peakBody(kind: PeakKind, vec: boolean, chains: number, steps: number): string {
  const ty = vec ? "vec4<f32>" : "f32";
  const comp = (k: number) => (vec ? "" : `.${"xyzw"[k % 4]}`);
  const init: string[] = [];
  let step: (k: number, s: number) => string;
  if (kind === "uniform-scale") {
    // acc <- acc * w + x: w lane-uniform (a broadcast weight), x per lane (an activation). The GEMM form
    // acc += x * w would let NIR's inexact algebra factor x * (w0 + w1 + ...) and read above the peak.
    for (const k of range(chains)) {
      init.push(`let x${k} = src_ld((lid + ${k * 64}u) % 1024u)${comp(k)} * 0.01;`);
      init.push(`var a${k} = ${ty}(f32(gid % 7u));`);
    }
    for (const s of range(4)) init.push(`let w${s} = -0.45 / src_ld(${512 + s}u);`);
    step = (k, s) => `a${k} = fma(a${k}, ${ty}(w${s % 4}.${"xyzw"[(s >> 2) % 4]}), x${k});`;
  } else {
    init.push(kind === "const-addend" ? `let c = ${ty}(-1.8);` : `let c = src_ld(lid)${vec ? "" : ".x"};`);
    for (const k of range(chains)) {
      // Every lane and component differs, so LLVM can neither scalarise nor merge the chains.
      const v = vec ? "vec4<f32>(0.1, 0.2, 0.3, 0.4)" : "0.2";
      init.push(`var a${k} = ${v} + f32(gid % 997u) * 1e-4 + ${(0.013 * k).toFixed(3)};`);
    }
    step = (k) => `a${k} = fma(a${k}, a${k}, c);`;
  }
  const lines = range(steps).map((s) => range(chains).map((k) => step(k, s)).join(" "));
  const sum = range(chains).map((k) => `a${k}`).join(" + ");
  const tail = `out_st(gid % 65536u, ${vec ? `dot(${sum}, vec4<f32>(1.0))` : sum});`;
  return `  ${[...init, ...lines, tail].join("\n  ")}`;
}

// The variants the peak is taken from: FMAs fed from a buffer, which run alike on Mesa 22.3 and 25.0 (the best
// of them differs between drivers and runs; docs/perf.md 2026-11-30).
const PEAK_DEFAULT: [PeakKind, boolean, number, number][] = [
  ["buffer-addend", true, 4, 128],
  ["buffer-addend", true, 6, 64],
  ["buffer-addend", false, 8, 256],
  ["buffer-addend", false, 16, 128],
];

/**
 * The fp32 FMA peak measured several ways, each a straight-line block of independent FMA chains:
 * - "const-addend": `a = fma(a, a, c)` with a compile-time constant `c` (the old peak kernel). Issue 15
 *   measured it at about half of Mesa 22's rate on Mesa 25 while chains with runtime operands ran equally on
 *   both, so it measures how the driver treats the constant more than what a kernel can reach.
 * - "buffer-addend": the same chains with `c` loaded from a buffer (per lane) once.
 * - "uniform-scale": `acc = fma(acc, w, x)` with per-lane `x` and lane-uniform `w` loaded once: the operand
 *   mix of a GEMM register block (an activation times a broadcast weight) without its loads. On Mesa 22
 *   it runs far below the others (register pressure probably makes LLVM re-load the uniforms, and Mesa 22
 *   loads storage lane by lane), so it is reported but not part of the peak.
 * `all = false` measures only the shapes that {@link measurePeakGflops} takes the best of.
 * Each in vec4 form (4 components per chain) and scalar form (one f32 per chain: 8 lanes of AVX2 per
 * register on lavapipe, so more chains fit before registers spill).
 */
export async function measurePeakVariants(device: Device, all = true): Promise<PeakVariant[]> {
  const res: PeakVariant[] = [];
  const shapes: [PeakKind, boolean, number, number][] = !all ? PEAK_DEFAULT : [
    ["const-addend", true, 4, 128],
    ["const-addend", true, 6, 64],
    ["buffer-addend", true, 4, 128],
    ["buffer-addend", true, 6, 64],
    ["buffer-addend", false, 8, 256],
    ["buffer-addend", false, 16, 128],
    ["uniform-scale", true, 4, 128],
    ["uniform-scale", false, 8, 256],
    ["uniform-scale", false, 16, 128],
  ];
  const twin = await timedTwin(device);
  try {
    for (const [kind, vec, chains, steps] of shapes) {
      res.push({
        name: `${kind} ${vec ? "vec4" : "f32"}x${chains}`,
        what: `${chains} ${vec ? "vec4" : "f32"} chains, ${steps} steps`,
        gflops: await peakKernel(
          device,
          twin,
          `peak_${kind}`,
          peakBody(kind, vec, chains, steps),
          chains * steps * (vec ? 4 : 1),
        ),
      });
    }
  } finally {
    if (twin && twin !== device) twin.destroy();
  }
  return res;
}

/**
 * Measured fp32 FMA peak in GFLOP/s: the best of the buffer-addend variants of {@link measurePeakVariants}
 * (FMAs whose operands come from memory, as in real kernels); the constant-addend chains are left out because
 * their rate depends on how the driver treats the constant.
 */
export async function measurePeakGflops(device: Device): Promise<number> {
  return bestPeak(await measurePeakVariants(device, false));
}

/** The peak figure of a set of variants: the best buffer-addend one. */
export function bestPeak(variants: PeakVariant[]): number {
  return Math.max(...variants.filter((v) => v.name.startsWith("buffer-addend")).map((v) => v.gflops));
}

/** Measured copy bandwidth in GB/s (bytes read + written), 4 consecutive vec4 per invocation (timed as the peak). */
export async function measureCopyGBs(device: Device, mib = 64): Promise<number> {
  const n = (mib * 2 ** 20) / 4;
  const twin = await timedTwin(device);
  const d = twin ?? device;
  const a = Tensor.empty(d, [n], "f32", "copy"), b = Tensor.empty(d, [n], "f32", "copy");
  const n4 = n / 4;
  const t = await timeKernel(device, twin, () =>
    launch({
      op: "copy",
      args: [{ name: "a", t: a, vec4: true }, { name: "b", t: b, write: true, vec4: true }],
      wg: 64,
      groups: Math.ceil(n4 / 4 / 64),
      body: `  for (var e = 0u; e < 4u; e = e + 1u) { let i = gid * 4u + e; if (i < ${
        u(n4)
      }) { b_st(i, a_ld(i)); } }`,
    }));
  a.dispose();
  b.dispose();
  if (twin && twin !== device) twin.destroy();
  return (2 * n * 4) / t / 1e9;
}

/** Formats a rate with its fraction of a reference. */
export function frac(v: number, ref: number): string {
  return `${v.toFixed(1)} (${((100 * v) / ref).toFixed(0)}%)`;
}

/** The Vulkan driver behind the adapter, as far as the process can tell (see {@link driverInfo}). */
export interface DriverInfo {
  /** The driver's shared library as loaded, e.g. /usr/lib/x86_64-linux-gnu/libvulkan_lvp.so; null if unknown. */
  library: string | null;
  /** The ICD manifest (JSON) that names that library; null if none matched. */
  icd: string | null;
  /** The manifest's `api_version`, e.g. "1.4.305" for Mesa 25.0's lavapipe, "1.1.230" for Mesa 22.3's. */
  apiVersion: string | null;
  /** The version string in the library, e.g. "Mesa 25.0.7-2~bpo12+1" or "NVIDIA 550.54.14"; null if none. */
  version: string | null;
  /** One line for benchmark output: adapter description, version and ICD API version. */
  label: string;
}

function icdManifests(): string[] {
  const env = (k: string) => Deno.env.get(k)?.split(":").filter((x) => x) ?? [];
  const listed = [...env("VK_DRIVER_FILES"), ...env("VK_ICD_FILENAMES")];
  if (listed.length) return listed;
  const out: string[] = [];
  for (const dir of ["/etc/vulkan/icd.d", "/usr/local/share/vulkan/icd.d", "/usr/share/vulkan/icd.d"]) {
    try {
      for (const e of Deno.readDirSync(dir)) if (e.name.endsWith(".json")) out.push(`${dir}/${e.name}`);
    } catch { /* no such directory */ }
  }
  return out;
}

/**
 * The Vulkan driver this process loaded for `device` (call it after opening the device): the ICD library
 * found in /proc/self/maps, the ICD manifest that names it (its `api_version`), and the Mesa or NVIDIA
 * version string in the library. WebGPU's adapter info has only vendor/architecture/device/description, so
 * this is read from the process; on systems without /proc every field but `label` is null.
 */
export function driverInfo(device: Device): DriverInfo {
  let maps: string[] = [];
  try {
    maps = [
      ...new Set(Deno.readTextFileSync("/proc/self/maps").split("\n").map((l) => l.split(/\s+/)[5] ?? "")),
    ]
      .filter((p) => p.startsWith("/"));
  } catch { /* not Linux, or no read permission */ }
  // The loader opens every installed ICD to enumerate devices, so several may be mapped: prefer the one whose
  // file name matches the adapter (lvp for llvmpipe, nvidia, intel, radeon), else the first.
  const hits: { library: string; icd: string; apiVersion: string | null }[] = [];
  for (const m of icdManifests()) {
    try {
      const j = JSON.parse(Deno.readTextFileSync(m)) as {
        ICD?: { library_path?: string; api_version?: string };
      };
      const lib = j.ICD?.library_path;
      if (!lib) continue;
      const hit = maps.find((p) => lib.startsWith("/") ? p === lib : p.endsWith(`/${lib}`));
      if (hit) hits.push({ library: hit, icd: m, apiVersion: j.ICD?.api_version ?? null });
    } catch { /* unreadable manifest */ }
  }
  const desc = `${device.info.description} ${device.info.vendor} ${device.info.architecture}`.toLowerCase();
  const want = /llvmpipe|lavapipe/.test(desc)
    ? "lvp"
    : /amd|radeon/.test(desc)
    ? "radeon"
    : ["nvidia", "intel"].find((k) => desc.includes(k));
  const pick = hits.find((h) => want && h.library.toLowerCase().includes(want)) ?? hits[0];
  const library = pick?.library ?? null, icd = pick?.icd ?? null, apiVersion = pick?.apiVersion ?? null;
  let version: string | null = null;
  const nv = maps.map((p) => /libnvidia-glcore\.so\.([\d.]+)$/.exec(p)).find((x) => x);
  if (nv) version = `NVIDIA ${nv[1]}`;
  else if (library) {
    try {
      // The driver's own version string (VkPhysicalDeviceDriverProperties.driverInfo) is a literal in it.
      const text = new TextDecoder("latin1").decode(Deno.readFileSync(library));
      version = /Mesa \d+\.\d+\.\d+[\w.~+-]*/.exec(text)?.[0] ?? null;
    } catch { /* unreadable library */ }
  }
  const parts = [version, apiVersion ? `Vulkan ${apiVersion}` : null].filter((x) => x);
  const label = `${device.info.description}${parts.length ? ` [${parts.join(", ")}]` : ""}`;
  return { library, icd, apiVersion, version, label };
}

if (import.meta.main) {
  // deno run -A bench/measure.ts: the driver, every peak variant and the copy bandwidth.
  const { openDevice } = await import("../core/device.ts");
  const device = await openDevice();
  console.log(`driver: ${driverInfo(device).label}`);
  const vs = await measurePeakVariants(device);
  for (const v of vs) {
    console.log(`${v.name.padEnd(24)} ${v.gflops.toFixed(1).padStart(7)} GFLOP/s  (${v.what})`);
  }
  console.log(`peak (best buffer-addend variant): ${bestPeak(vs).toFixed(1)} GFLOP/s`);
  console.log(`copy: ${(await measureCopyGBs(device)).toFixed(1)} GB/s`);
  device.destroy();
}
