/**
 * Does this Deno's WebGPU reach the GPU's matrix units (tensor cores)? Deno 2.9's wgpu knows a native feature
 * `wgpu-cooperative-matrix`, and its WGSL compiler (naga) accepts `enable wgpu_cooperative_matrix;` with the
 * types `coop_mat8x8<T, A|B|C>` / `coop_mat16x16<T, A|B|C>` and `coopLoad` / `coopMultiplyAdd` / `coopStore`,
 * lowered to SPIR-V's KHR cooperative matrix on Vulkan. This probe says whether the adapter offers the
 * feature and, where it does, checks and times one naive kernel per element type (one subgroup per output
 * tile, operands straight from storage: a floor for what a tiled kernel would reach):
 *
 *   deno run -A bench/coopmat.ts [--n 4096] [--results FILE.jsonl] [--plain]
 *
 * `--plain` runs the same harness with a scalar kernel in place of the cooperative one, on any adapter: a
 * check of this script (buffers, f16 packing, the error and the timing) before GPU time is spent on it.
 *
 * Each variant is a record: compile errors, the max error against float64 on 64 x 64 x 64, TFLOP/s at n^3.
 * Where the feature is absent (lavapipe, browsers) it records that and the adapter's features, and exits 0.
 */
const FEATURE = "wgpu-cooperative-matrix";
const arg = (k: string, d: string) => {
  const i = Deno.args.indexOf(`--${k}`);
  return i >= 0 && i + 1 < Deno.args.length ? Deno.args[i + 1] : d;
};
const N = Number(arg("n", "4096"));
const results = arg("results", "");
const plain = Deno.args.includes("--plain");

const adapter = await navigator.gpu.requestAdapter({ powerPreference: "high-performance" });
if (!adapter) throw new Error("bench/coopmat: no WebGPU adapter");
const features = [...adapter.features].sort() as string[];
const record = async (r: Record<string, unknown>) => {
  const line = JSON.stringify({
    date: new Date().toISOString(),
    adapter: adapter.info.description,
    part: "coopmat",
    ...r,
  });
  console.log(line);
  if (results) await Deno.writeTextFile(results, line + "\n", { append: true });
};

/** One variant: element type of A/B, of the accumulator C, and the tile edge naga offers for it. */
interface Variant {
  name: string;
  ab: "f32" | "f16";
  acc: "f32" | "f16";
  tile: 8 | 16;
}
const VARIANTS: Variant[] = [
  { name: "f32 8x8", ab: "f32", acc: "f32", tile: 8 },
  { name: "f16 16x16, f16 accumulator", ab: "f16", acc: "f16", tile: 16 },
  { name: "f16 16x16, f32 accumulator", ab: "f16", acc: "f32", tile: 16 },
];

/** The kernels' bindings: A, B (read), C (read-write), the sizes as a uniform. */
function bindings(v: Variant): string {
  return `${v.ab === "f16" || v.acc === "f16" ? "enable f16;" : ""}
struct Dims { m: u32, n: u32, k: u32, pad: u32 }
@group(0) @binding(0) var<storage, read> A: array<${v.ab}>;
@group(0) @binding(1) var<storage, read> B: array<${v.ab}>;
@group(0) @binding(2) var<storage, read_write> C: array<${v.acc}>;
@group(0) @binding(3) var<uniform> d: Dims;`;
}

/** C[M, N] = A[M, K] B[K, N], row-major; workgroup (x, y) computes the tile at rows y*T, columns x*T. */
function kernel(v: Variant): string {
  const T = v.tile, mat = `coop_mat${T}x${T}`;
  if (plain) return plainKernel(v);
  return `enable wgpu_cooperative_matrix;
${bindings(v)}
// 32 invocations: one subgroup on NVIDIA (a smaller subgroup repeats the same tile, which stays correct).
@compute @workgroup_size(32)
fn main(@builtin(workgroup_id) wg: vec3<u32>) {
  let row = wg.y * ${T}u;
  let col = wg.x * ${T}u;
  var acc = coopLoad<${mat}<${v.acc}, C>>(&C[row * d.n + col], d.n);
  for (var k = 0u; k < d.k; k += ${T}u) {
    let a = coopLoad<${mat}<${v.ab}, A>>(&A[row * d.k + k], d.k);
    let b = coopLoad<${mat}<${v.ab}, B>>(&B[k * d.n + col], d.n);
    acc = coopMultiplyAdd(a, b, acc);
  }
  coopStore(acc, &C[row * d.n + col], d.n);
}`;
}

/** The same tile product without matrix units (for `--plain`): 32 invocations share the T x T outputs. */
function plainKernel(v: Variant): string {
  const T = v.tile;
  return `${bindings(v)}
@compute @workgroup_size(32)
fn main(@builtin(workgroup_id) wg: vec3<u32>, @builtin(local_invocation_index) li: u32) {
  for (var e = li; e < ${T * T}u; e += 32u) {
    let row = wg.y * ${T}u + e / ${T}u;
    let col = wg.x * ${T}u + e % ${T}u;
    var acc = C[row * d.n + col];
    for (var k = 0u; k < d.k; k++) {
      acc += ${v.acc}(A[row * d.k + k]) * ${v.acc}(B[k * d.n + col]);
    }
    C[row * d.n + col] = acc;
  }
}`;
}

/** Host bytes of `values` in the element type (f16 through Float16Array where Deno has it). */
function pack(values: Float64Array, type: "f32" | "f16"): ArrayBuffer {
  if (type === "f32") return Float32Array.from(values).buffer;
  const F16 = (globalThis as unknown as { Float16Array?: new (a: ArrayLike<number>) => ArrayBufferView })
    .Float16Array;
  if (!F16) throw new Error("this Deno has no Float16Array to write f16 operands");
  return (new F16(values) as ArrayBufferView).buffer as ArrayBuffer;
}

async function runVariant(device: GPUDevice, v: Variant): Promise<Record<string, unknown>> {
  device.pushErrorScope("validation");
  const module = device.createShaderModule({ code: kernel(v), label: v.name });
  const pipeline = device.createComputePipeline({ layout: "auto", compute: { module, entryPoint: "main" } });
  const err = await device.popErrorScope();
  if (err) return { error: `compile: ${err.message.trim().split("\n").slice(0, 6).join(" | ")}` };
  const bytes = (t: "f32" | "f16") => (t === "f32" ? 4 : 2);
  const setup = (n: number, fill: boolean) => {
    const rnd = (s: number) => () => ((s = (s * 1103515245 + 12345) >>> 0) / 2 ** 32) * 2 - 1;
    const host = [rnd(1), rnd(2)].map((r) => Float64Array.from({ length: n * n }, fill ? r : () => 0));
    const buf = (size: number, usage: number) => device.createBuffer({ size, usage });
    const S = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC;
    const a = buf(n * n * bytes(v.ab), S), b = buf(n * n * bytes(v.ab), S);
    const c = buf(n * n * bytes(v.acc), S), u = buf(16, GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST);
    device.queue.writeBuffer(a, 0, pack(host[0], v.ab));
    device.queue.writeBuffer(b, 0, pack(host[1], v.ab));
    device.queue.writeBuffer(u, 0, Uint32Array.from([n, n, n, 0]));
    const group = device.createBindGroup({
      layout: pipeline.getBindGroupLayout(0),
      entries: [a, b, c, u].map((buffer, binding) => ({ binding, resource: { buffer } })),
    });
    const dispatch = (times: number) => {
      const enc = device.createCommandEncoder();
      for (let i = 0; i < times; i++) {
        enc.clearBuffer(c);
        const pass = enc.beginComputePass();
        pass.setPipeline(pipeline);
        pass.setBindGroup(0, group);
        pass.dispatchWorkgroups(n / v.tile, n / v.tile);
        pass.end();
      }
      device.queue.submit([enc.finish()]);
      return device.queue.onSubmittedWorkDone();
    };
    return { host, a, b, c, u, dispatch };
  };
  // Correctness on 64^3 against float64 on the operands as stored.
  const small = setup(64, true);
  await small.dispatch(1);
  const read = device.createBuffer({
    size: small.c.size,
    usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
  });
  const enc = device.createCommandEncoder();
  enc.copyBufferToBuffer(small.c, 0, read, 0, small.c.size);
  device.queue.submit([enc.finish()]);
  await read.mapAsync(GPUMapMode.READ);
  const F16 = (globalThis as unknown as { Float16Array?: new (b: ArrayBuffer) => ArrayLike<number> })
    .Float16Array!;
  const got = Array.from(
    v.acc === "f32" ? new Float32Array(read.getMappedRange()) : new F16(read.getMappedRange()),
  );
  read.unmap();
  const q = (x: Float64Array) =>
    v.ab === "f32"
      ? Float64Array.from(new Float32Array(pack(x, "f32")))
      : Float64Array.from(new F16(pack(x, "f16")));
  const [qa, qb] = small.host.map(q);
  let maxErr = 0, maxRef = 0;
  for (let i = 0; i < 64; i++) {
    for (let j = 0; j < 64; j++) {
      let s = 0;
      for (let k = 0; k < 64; k++) s += qa[i * 64 + k] * qb[k * 64 + j];
      maxErr = Math.max(maxErr, Math.abs(s - got[i * 64 + j]));
      maxRef = Math.max(maxRef, Math.abs(s));
    }
  }
  for (const x of [small.a, small.b, small.c, small.u, read]) x.destroy();
  // Time at n^3 by differencing 1 and 3 dispatches (one GPU wait each).
  const big = setup(N, false);
  await big.dispatch(1);
  const time = async (k: number) => {
    const t0 = performance.now();
    await big.dispatch(k);
    return (performance.now() - t0) / 1000;
  };
  const s = Math.max(1e-6, ((await time(3)) - (await time(1))) / 2);
  for (const x of [big.a, big.b, big.c, big.u]) x.destroy();
  return { n: N, relErr64: maxErr / maxRef, ms: s * 1e3, tflops: 2 * N ** 3 / s / 1e12 };
}

if (!plain && !features.includes(FEATURE)) {
  await record({ available: false, why: `the adapter does not offer ${FEATURE}`, features });
} else {
  const required = [
    ...(plain ? [] : [FEATURE]),
    ...(features.includes("shader-f16") ? ["shader-f16"] : []),
  ] as GPUFeatureName[];
  const device = await adapter.requestDevice({ requiredFeatures: required });
  for (const v of VARIANTS) {
    if ((v.ab === "f16" || v.acc === "f16") && !features.includes("shader-f16")) {
      await record({ available: true, variant: v.name, error: "no shader-f16" });
      continue;
    }
    try {
      await record({ available: !plain, plain, variant: v.name, ...(await runVariant(device, v)) });
    } catch (e) {
      await record({ available: true, variant: v.name, error: String((e as Error).message ?? e) });
    }
  }
  device.destroy();
}
