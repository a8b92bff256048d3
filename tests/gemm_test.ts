/**
 * The "gpu" profile's GEMM kernels (kernels/matmul.ts) on lavapipe with that profile forced, against a float64
 * reference computed here: the vec4 tile in its four shapes (128 x 128 and 64 x 64 as `gemmTile` picks them
 * for short K, 128 x 64 and 64 x 128 forced) in all four operand layouts with ragged edges, broadcast batch dims, the K split of few-tile products, windowed
 * bindings, the scalar fallback where a contiguous dim is not a multiple of 4, and the batch sum (a pointwise
 * conv's weight gradient; on both profiles) and the gradient of a 2-D operand broadcast over a batch that uses
 * it; the epilogue (bias, residual, ReLU) in every kernel and after a K split, on both profiles. Tolerance:
 * 2e-6 of sum_k |a||b| (plus the epilogue's |bias| + |residual|) per element (f32 accumulation over K terms
 * stays far below it).
 */
import { F, openDevice, tensor, tidy } from "../mod.ts";
import type { Device } from "../core/device.ts";
import { gemm, type GemmTile, gemmTile, kSegments } from "../kernels/matmul.ts";
import { prng, randData } from "./helpers.ts";

interface GemmCase {
  name: string;
  a: number[];
  b: number[];
  transA?: boolean;
  transB?: boolean;
  /** Sum the batch's products (`gemm`'s sumBatch). */
  sumBatch?: boolean;
  /** The epilogue: + bias[m], + a residual of the output's shape, then ReLU. */
  epi?: boolean;
  /** The vec4 tile, forced (else `gemmTile`'s choice). */
  tile?: GemmTile;
  /** The vec4 kernel that loads the next K step while it multiplies (`gemm`'s prefetch). */
  prefetch?: boolean;
  /** `gemm`'s deepSplit. */
  deepSplit?: boolean;
}

const cases: GemmCase[] = [];
// [name, M, N, K, tile]: the 128 tile (M = 516, N = 520, K = 36: a ragged last row and column of tiles and a
// partial K tile) and the 64 tile (ragged) as gemmTile picks them for short K; the rectangular tiles, forced
// (gemmTile takes them for K >= 256 with enough workgroups), ragged in both dims. All in four layouts; after
// them the tiles with a K split, a batch sum and the epilogue.
const tiles: [string, number, number, number, GemmTile?][] = [
  ["128 tile", 516, 520, 36],
  ["64 tile", 68, 132, 20],
  ["128 x 64 tile", 196, 76, 28, [8, 4]],
  ["64 x 128 tile", 60, 140, 24, [4, 8]],
];
for (const [name, M, N, K, tile] of tiles) {
  for (const [tA, tB] of [[false, false], [true, false], [false, true], [true, true]]) {
    cases.push({
      name: `${name}, ${tA ? "A^T" : "A"} ${tB ? "B^T" : "B"}`,
      a: tA ? [K, M] : [M, K],
      b: tB ? [N, K] : [K, N],
      transA: tA,
      transB: tB,
      tile,
    });
  }
}
cases.push({ name: "128 x 64 tile, K split", a: [132, 4100], b: [24, 4100], transB: true, tile: [8, 4] });
cases.push({
  name: "64 x 128 tile, batch sum, K split",
  a: [2, 20, 2052],
  b: [2, 136, 2052],
  transB: true,
  sumBatch: true,
  tile: [4, 8],
});
cases.push({ name: "128 x 128 tile, K split", a: [136, 2052], b: [2052, 132], tile: [8, 8] });
cases.push({ name: "epilogue, 128 x 64 tile", a: [2, 132, 36], b: [36, 68], epi: true, tile: [8, 4] });
cases.push({ name: "epilogue, 64 x 128 tile", a: [2, 68, 36], b: [36, 132], epi: true, tile: [4, 8] });
// One 64 tile and K = 4100: split into 16 K segments summed afterwards.
cases.push({ name: "K split (20 x 4100 @ 4100 x 24^T)", a: [20, 4100], b: [24, 4100], transB: true });
// K = 1.1 M: past 256 x 264 K tiles, one tile takes 268 segments of 257 K tiles (kSegments' second rule).
cases.push({
  name: "long K, split (8 x 1.1M @ 1.1M x 12^T)",
  a: [8, 1100000],
  b: [12, 1100000],
  transB: true,
});
// The same with K split by kSegments' first rule only (a tuner variant): 264 segments of 261 K tiles.
cases.push({
  name: "long K, first split rule only",
  a: [8, 1100000],
  b: [12, 1100000],
  transB: true,
  deepSplit: false,
});
cases.push({ name: "batch broadcast [2,1] x [3]", a: [2, 1, 12, 8], b: [3, 8, 16] });
// The batch folded into the K split's partials: 3 samples x 16 segments, then the 128 tile and the fallback.
cases.push({
  name: "batch sum, K split",
  a: [3, 20, 4100],
  b: [3, 24, 4100],
  transB: true,
  sumBatch: true,
});
cases.push({ name: "batch sum, 128 tile", a: [2, 516, 36], b: [2, 36, 520], sumBatch: true });
cases.push({ name: "batch sum, fallback", a: [3, 9, 7], b: [3, 7, 16], sumBatch: true });
// Not vec4-aligned: K = 7 with A not transposed, and N = 130: the scalar 64 x 64 kernel.
cases.push({ name: "fallback, K = 7", a: [9, 7], b: [7, 16] });
cases.push({ name: "fallback, N = 130", a: [8, 12], b: [12, 130] });
// The epilogue (bias, residual, ReLU) as each kernel stores, and after a K split's sum.
cases.push({ name: "epilogue, 128 tile", a: [2, 516, 36], b: [36, 520], epi: true });
cases.push({ name: "epilogue, 64 tile, A^T B", a: [20, 68], b: [20, 132], transA: true, epi: true });
cases.push({ name: "epilogue, K split", a: [20, 4100], b: [24, 4100], transB: true, epi: true });
cases.push({ name: "epilogue, fallback", a: [2, 9, 7], b: [7, 130], epi: true });
cases.push({ name: "epilogue, A B^T, short K", a: [9, 8], b: [16, 8], transB: true, epi: true });
// The cpu profile's A B^T kernel with N >= 128 (4 uniform rows x 256 columns a workgroup): ragged rows and
// columns, K split in 2 segments; and with the epilogue.
cases.push({ name: "A B^T wide, ragged, K split", a: [7, 1028], b: [259, 1028], transB: true });
cases.push({ name: "epilogue, A B^T wide", a: [7, 64], b: [259, 64], transB: true, epi: true });

// The vec4 cases again with the next K step loaded while the current one multiplies: every tile and layout,
// ragged edges, K splits (the last step of a segment loads nothing), the batch sum and the epilogue.
for (
  const c of cases.filter((c) =>
    c.tile || /^(K split|batch sum, (K split|128)|epilogue, (128|64|K))/.test(c.name)
  )
) {
  cases.push({ ...c, name: `${c.name}, prefetch`, prefetch: true });
}

/** op(a) @ op(b) in float64 with broadcast batch dims, and sum_k |a||b| per element. */
function reference(
  c: GemmCase,
  a: number[],
  b: number[],
): { y: number[]; mag: number[]; shape: number[]; M: number } {
  const ar = c.a.slice(-2), br = c.b.slice(-2);
  const M = c.transA ? ar[1] : ar[0], K = c.transA ? ar[0] : ar[1], N = c.transB ? br[0] : br[1];
  const ab = c.a.slice(0, -2), bb = c.b.slice(0, -2);
  const nd = Math.max(ab.length, bb.length);
  const pad = (s: number[]) => [...Array(nd - s.length).fill(1), ...s];
  const pa = pad(ab), pb = pad(bb), batch = pa.map((d, i) => Math.max(d, pb[i]));
  const nbt = batch.reduce((p, d) => p * d, 1);
  const y: number[] = [], mag: number[] = [];
  for (let bi = 0; bi < nbt; bi++) {
    let r = bi, ao = 0, bo = 0, sa = 1, sb = 1;
    for (let d = nd - 1; d >= 0; d--) {
      const i = r % batch[d];
      r = Math.floor(r / batch[d]);
      if (pa[d] > 1) ao += i * sa;
      if (pb[d] > 1) bo += i * sb;
      sa *= pa[d];
      sb *= pb[d];
    }
    ao *= M * K;
    bo *= K * N;
    for (let m = 0; m < M; m++) {
      for (let n = 0; n < N; n++) {
        let s = 0, q = 0;
        for (let k = 0; k < K; k++) {
          const x = a[ao + (c.transA ? k * M + m : m * K + k)],
            w = b[bo + (c.transB ? n * K + k : k * N + n)];
          s += x * w;
          q += Math.abs(x * w);
        }
        y.push(s);
        mag.push(q);
      }
    }
  }
  if (!c.sumBatch) return { y, mag, shape: [...batch, M, N], M };
  const add = (v: number[]) => {
    const r = new Array(M * N).fill(0);
    v.forEach((x, i) => r[i % (M * N)] += x);
    return r;
  };
  return { y: add(y), mag: add(mag), shape: [M, N], M };
}

/** The reference with the epilogue applied: relu(y + bias[m] + residual), and the magnitudes it adds. */
function withEpilogue(
  r: { y: number[]; mag: number[]; shape: number[]; M: number },
  bias: number[],
  res: number[],
): void {
  const N = r.shape[r.shape.length - 1];
  r.y = r.y.map((v, i) => Math.max(v + bias[Math.floor(i / N) % r.M] + res[i], 0));
  r.mag = r.mag.map((q, i) => q + Math.abs(bias[Math.floor(i / N) % r.M]) + Math.abs(res[i]));
}

async function check(device: Device, only?: (c: GemmCase) => boolean): Promise<void> {
  const rng = prng(5);
  for (const c of cases) {
    const a = randData(rng, c.a.reduce((p, d) => p * d, 1), -1, 1);
    const b = randData(rng, c.b.reduce((p, d) => p * d, 1), -1, 1);
    if (only && !only(c)) continue;
    const ref = reference(c, a, b);
    const bias = c.epi ? randData(rng, ref.M, -1, 1) : [];
    const res = c.epi ? randData(rng, ref.y.length, -1, 1) : [];
    if (c.epi) withEpilogue(ref, bias, res);
    const got = await tidy(() => {
      const ta = tensor(a, c.a, { device }), tb = tensor(b, c.b, { device });
      const y = c.epi
        ? gemm("test", ta, tb, !!c.transA, !!c.transB, {
          bias: tensor(bias, [ref.M], { device }),
          residual: tensor(res, ref.shape, { device }),
          relu: true,
          tile: c.tile,
          prefetch: c.prefetch,
        })
        : c.sumBatch || c.tile || c.prefetch || c.deepSplit === false
        ? gemm("test", ta, tb, !!c.transA, !!c.transB, {
          sumBatch: c.sumBatch,
          tile: c.tile,
          prefetch: c.prefetch,
          deepSplit: c.deepSplit,
        })
        : F.matmul(ta, tb, { transA: c.transA, transB: c.transB });
      return y.toArray();
    });
    if (got.length !== ref.y.length) {
      throw new Error(`${c.name}: ${got.length} values, expected ${ref.y.length}`);
    }
    for (let i = 0; i < got.length; i++) {
      if (!(Math.abs(got[i] - ref.y[i]) <= 2e-6 * ref.mag[i] + 1e-30)) {
        throw new Error(
          `${c.name}: element ${i} is ${got[i]}, float64 says ${ref.y[i]} (sum |a||b| ${ref.mag[i]})`,
        );
      }
    }
  }
}

Deno.test("gpu-profile GEMM matches float64: vec4 tiles, layouts, edges, batch, K split, fallback", async () => {
  const device = await openDevice({ profile: "gpu", label: "gpu-profile" });
  try {
    await check(device);
  } finally {
    device.destroy();
  }
});

Deno.test("kSegments: 264 workgroups from segments of 16 K tiles, up to 2048 from segments of 256", () => {
  const eq = (got: { segs: number; segLen: number }, segs: number, segLen: number, what: string) => {
    if (got.segs !== segs || got.segLen !== segLen) {
      throw new Error(`${what}: ${JSON.stringify(got)}, expected ${segs} segments of ${segLen}`);
    }
  };
  eq(kSegments(300, 1 << 20), 1, 1 << 20, "tiles enough");
  eq(kSegments(64, 5120), 4, 1280, "short K: 16 K tiles each at least");
  eq(kSegments(1, 4100), 16, 272, "one tile, K 4100");
  eq(kSegments(5, 4 * 64 * 256 * 256, 32 * 1080), 409, 41024, "the UNet's 3x3x3 weight gradient");
  eq(kSegments(4, 1 << 24, 1 << 23), 66, 254208, "partials capped at 64 MiB: back to the first rule");
  eq(kSegments(200, 2048), 1, 2048, "200 tiles, K = 2048 channels: the second rule adds no split");
  eq(kSegments(1, 1100000), 268, 4112, "the long-K case below");
  eq(
    kSegments(5, 4 * 64 * 256 * 256, 32 * 1080, false),
    52,
    322640,
    "the 3x3x3 weight gradient, first rule only",
  );
  eq(kSegments(1, 1100000, 0, false), 264, 4176, "the long-K case, first rule only");
  for (const [tiles, K] of [[1, 1e6], [7, 3e6], [100, 1e7], [263, 1e5]]) {
    const { segs, segLen } = kSegments(tiles, K);
    if (segs * tiles > 2048 || segLen % 16 || segLen * segs < K || segLen * (segs - 1) >= K) {
      throw new Error(`${tiles} tiles, K ${K}: ${segs} x ${segLen}`);
    }
  }
});

Deno.test("gemmTile: the square rule under K = 256, the best estimated rate from there (CSN-152 shapes)", () => {
  const eq = (got: number[], want: number[], what: string) => {
    if (got.join() !== want.join()) throw new Error(`${what}: tile [${got}], expected [${want}]`);
  };
  // [M, N, K, batch]: pointwise GEMMs of the classifier at batch 16 (forward W @ X: M = out channels, N =
  // positions, K = in channels; weight gradient gY @ X^T: K = positions).
  eq(gemmTile(256, 163840, 64, 16), [4, 4], "layer1 forward 64 -> 256: short K");
  eq(gemmTile(520, 516, 36), [8, 8], "short K, M and N >= 512");
  eq(gemmTile(64, 163840, 256, 16), [4, 8], "layer1 forward 256 -> 64: 64 rows");
  eq(gemmTile(256, 64, 163840, 16), [8, 4], "layer1 weight gradient [256, 64]");
  eq(gemmTile(256, 2560, 1024, 16), [8, 8], "layer3 forward 1024 -> 256 (4 x 4 before)");
  eq(gemmTile(256, 1024, 2560, 16), [8, 8], "layer3 weight gradient [256, 1024] (4 x 4 before)");
  eq(gemmTile(512, 320, 2048, 16), [8, 4], "layer4 forward 2048 -> 512: 320 positions");
  eq(gemmTile(512, 320, 2048, 16, true), [4, 4], "the same with moments: no tile taller than wide");
  eq(gemmTile(68, 132, 300), [4, 4], "few tiles: the most workgroups");
  eq(gemmTile(4096, 4096, 4096), [8, 8], "4096^3");
});

Deno.test("gpu-profile GEMM in WebGPU's guaranteed 16 KiB of workgroup memory (unpadded tiles)", async () => {
  const device = await openDevice({ profile: "gpu", maxWorkgroupStorage: 16384, label: "gpu-16k" });
  try {
    await check(device, (c) => /^(128|64)( x (64|128))? tile/.test(c.name));
  } finally {
    device.destroy();
  }
});

Deno.test("gpu-profile GEMM with operands split across 64 KiB binding windows", async () => {
  const device = await openDevice({ profile: "gpu", maxBindingBytes: 65536, label: "windows" });
  try {
    // Every access picks its window by a branch, which lavapipe runs slowly: one case per path.
    await check(
      device,
      (c) => ["128 tile, A B", "64 tile, A^T B^T", "K split"].some((n) => c.name.startsWith(n)),
    );
  } finally {
    device.destroy();
  }
});

Deno.test("batch-summed GEMM and the epilogue on the cpu profile, a broadcast weight's gradient on both", async () => {
  for (const profile of ["cpu", "gpu"] as const) {
    const device = await openDevice({ profile, label: profile });
    try {
      // The cpu kernels: the lanes kernel and the A B^T kernel (in the kernel, and after its K split's sum;
      // 32 x 32 and wide tiles).
      if (profile === "cpu") await check(device, (c) => !!c.sumBatch || !!c.epi || (!!c.transB && !c.transA));
      // x [3, 5, 12] @ w [12, 8]: w's gradient is the batch sum of x^T g, g = ones.
      const rng = prng(9);
      const x = randData(rng, 180, -1, 1);
      const gw = await tidy(() => {
        const w = tensor(randData(rng, 96, -1, 1), [12, 8], { device, requiresGrad: true });
        F.sum(F.matmul(tensor(x, [3, 5, 12], { device }), w)).backward();
        return w.grad!.toArray();
      });
      for (let k = 0; k < 12; k++) {
        let s = 0, q = 0;
        for (let r = 0; r < 15; r++) s += x[r * 12 + k], q += Math.abs(x[r * 12 + k]);
        for (let n = 0; n < 8; n++) {
          if (!(Math.abs(gw[k * 8 + n] - s) <= 2e-6 * q)) {
            throw new Error(`${profile}: grad w[${k}, ${n}] is ${gw[k * 8 + n]}, float64 says ${s}`);
          }
        }
      }
    } finally {
      device.destroy();
    }
  }
});
