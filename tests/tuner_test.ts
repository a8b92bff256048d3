/**
 * The variant tuner (`CSN_BENCHMARK=1`, core/tuner.ts) on lavapipe with the "gpu" profile forced: it times each
 * candidate once per key and then hands out the fastest (a kernel with 100x the work loses); candidates run
 * into scratch outputs, so a tuned call gives the rule's result bit for bit before the timings are in and the
 * chosen variant's after (the GEMM's tiles, with and without prefetch, with a K split, a batch sum, the
 * epilogue and batch-norm moments;
 * a 3x3x3 conv's three implicit GEMMs through autograd); tuning trials stay out of the per-kernel profile.
 */
import { F, openDevice, randn, type Tensor } from "../mod.ts";
import type { Device } from "../core/device.ts";
import { fastest, type Tuner } from "../core/tuner.ts";
import { launch1d } from "../kernels/codegen.ts";
import {
  gemm,
  type GemmMoments,
  type GemmOptions,
  type GemmTile,
  gemmVariantLabel,
  gemmVariants,
  kSegments,
} from "../kernels/matmul.ts";
import { assertClose, assertThrows } from "./helpers.ts";
import { formatSummary, summarize } from "../bench/tuning_summary.ts";

function assert(cond: unknown, what: string): asserts cond {
  if (!cond) throw new Error(`assertion failed: ${what}`);
}

async function hasTimestamps(): Promise<boolean> {
  const a = await navigator.gpu.requestAdapter();
  return !!a?.features.has("timestamp-query");
}

function sameBits(a: Float32Array, b: Float32Array, what: string): void {
  const x = new Uint32Array(a.buffer, a.byteOffset, a.length),
    y = new Uint32Array(b.buffer, b.byteOffset, b.length);
  assert(x.length === y.length, `${what}: ${x.length} vs ${y.length} elements`);
  const i = x.findIndex((v, k) => v !== y[k]);
  if (i >= 0) throw new Error(`${what}: differs first at element ${i} of ${x.length} (${a[i]} vs ${b[i]})`);
}

async function assertSameBits(a: Tensor, b: Tensor, what: string): Promise<void> {
  sameBits(await a.toArray() as Float32Array, await b.toArray() as Float32Array, what);
}

const ignore = !(await hasTimestamps());

Deno.test("tuner: the fastest candidate wins only by more than the margin; unmeasured ones never", () => {
  assert(fastest([2, 1, 3], 0.03) === 1, "clear winner");
  assert(fastest([1, 0.99, 3], 0.03) === 0, "within the margin: the rule's choice");
  assert(fastest([1, 0.9, 0.95], 0.03) === 1, "the fastest of several");
  assert(fastest([null, 2, 1], 0.03) === 2, "candidate 0 unmeasured");
  assert(fastest([1, null, null], 0.03) === 0, "others unmeasured");
});

Deno.test({
  name:
    "tuner: picks the candidate with 1/100 the work after the next sync; nested and empty trials measure nothing",
  ignore,
  fn: async () => {
    const device = await openDevice({ profile: "gpu", benchmark: true });
    try {
      const tuner = device.tuner!;
      assert(tuner !== null, "benchmark: true makes a tuner");
      const n = 1 << 14;
      const spin = (iters: number) => {
        const out = randn([n], { device, seed: 1 });
        launch1d({
          op: `spin${iters}`,
          args: [{ name: "c", t: out, write: true }],
          n,
          body:
            `  var v = c_ld(gid);\n  for (var i = 0u; i < ${iters}u; i = i + 1u) { v = fma(v, 0.999, 0.001); }\n  c_st(gid, v);`,
        });
        return out;
      };
      const trials: string[] = [];
      const pick = () =>
        tuner.choose("spin", ["slow", "fast"], (c) => {
          trials.push(c);
          // A nested choice inside a trial gets its candidate 0 and records no trial of its own.
          assert(tuner.choose("inner", ["a", "b"], () => trials.push("inner")) === "a", "nested choice");
          spin(c === "slow" ? 2000 : 20).dispose();
        });
      assert(pick() === "slow", "before the timings: the rule's choice");
      assert(trials.join() === "slow,fast,slow,fast", `two runs of each candidate, got ${trials}`);
      assert(pick() === "slow" && trials.length === 4, "a pending key is not measured again");
      const pending = () => tuner.pending;
      assert(pending() === 1, "one key pending");
      await device.sync();
      assert(pending() === 0, "decided at the sync");
      const d = tuner.decisions().find((x) => x.key === "spin")!;
      // 100x the work is ~8-10x the time on lavapipe (a dispatch's fixed cost): 2x leaves the VM's noise room.
      assert(d.chosen === 1 && d.ms[0]! > 2 * d.ms[1]!, `fast chosen, got ${JSON.stringify(d)}`);
      const before = device.stats().dispatches;
      assert(pick() === "fast" && trials.length === 4, "decided: the fastest, no more trials");
      assert(device.stats().dispatches === before, "a decided choice dispatches nothing");
      assert(tuner.choose("empty", [1, 2], () => {}) === 1, "trials without dispatches");
      assert(
        tuner.decisions().some((x) => x.key === "empty" && x.chosen === 0),
        "decided at once, as the rule",
      );
      assert(tuner.report().includes("spin\n"), "the report names the key");
      assertThrows(() => tuner.choose("none", [], () => {}), "no candidates for none");
    } finally {
      device.destroy();
    }
  },
});

Deno.test("tuner: the GEMM's variants: the rule's first, prefetch, the first split rule only where it differs", () => {
  const labels = (...a: Parameters<typeof gemmVariants>) =>
    gemmVariants(...a).map(gemmVariantLabel).join(", ");
  const all =
    "64x64, 128x64, 64x128, 128x128, 64x64 prefetch, 128x64 prefetch, 64x128 prefetch, 128x128 prefetch";
  assert(labels(68, 132, 260) === all, `K = 260: ${labels(68, 132, 260)}`);
  // A 1.1 M-long K on one tile: kSegments' second rule splits it further (268 segments, 264 by the first).
  assert(labels(8, 12, 1100000) === `${all}, 64x64 shallow split`, `long K: ${labels(8, 12, 1100000)}`);
  // Moments: BN >= BM, and only variants that fuse them as the rule's tile does (no K split here).
  const m = labels(72, 100, 256, 2, true);
  assert(m === "64x64, 64x128, 128x128, 64x64 prefetch, 64x128 prefetch, 128x128 prefetch", `moments: ${m}`);
  // With moments, every variant fuses them as the rule's tile does, or splits K as it does.
  for (
    const [M, N, K, nb] of [[64, 64, 2048, 1], [512, 320, 2048, 1], [256, 40, 1024, 1], [64, 2560, 64, 1]]
  ) {
    const vs = gemmVariants(M, N, K, nb, true);
    const fused = (v: (typeof vs)[number]) =>
      kSegments(nb * Math.ceil(M / (16 * v.tile[0])) * Math.ceil(N / (16 * v.tile[1])), K, M * N * nb)
        .segs === 1;
    const what = `${M} x ${N} x ${K}: ${vs.map(gemmVariantLabel)}`;
    assert(vs.length >= 2 && vs.every((v) => v.tile[1] >= v.tile[0] && fused(v) === fused(vs[0])), what);
  }
});

Deno.test("tuning summary: shapes, kept rules, ms and winners per kind of kernel", () => {
  const d = (key: string, candidates: string[], ms: number[], chosen: number) => ({
    key,
    candidates,
    ms,
    chosen,
  });
  const kinds = summarize([
    d("gemm f32[8,8] @ f32[8,8] -> f32", ["64x64", "128x128"], [2, 1], 1),
    d("gemm f32[4,8] @ f32[8,8] -> f32", ["64x64", "128x128"], [1, 3], 0),
    d("conv weight gradient x[1,2,3,4,5] w[6,2,3,3,3] stride 1,1,1 -> f32", ["32x256", "im2col"], [4, 2], 1),
  ]);
  const text = formatSummary("test", kinds);
  assert(kinds.length === 2 && kinds[0].kind === "gemm" && kinds[1].kind === "conv weight gradient", text);
  assert(
    kinds[0].keys === 2 && kinds[0].kept === 1 && kinds[0].ruleMs === 3 && kinds[0].chosenMs === 2,
    text,
  );
  assert(kinds[1].winners.im2col === 1 && text.includes("50 % less"), text);
});

interface Product {
  name: string;
  a: number[];
  b: number[];
  transA?: boolean;
  transB?: boolean;
  opts?: (d: Device) => GemmOptions;
}

const products: Product[] = [
  // K >= 256, so every tile is a candidate; ragged M and N.
  { name: "A B", a: [68, 260], b: [260, 132] },
  // A pointwise conv's weight gradient: K = positions, B stored along K, the batch summed into a K split.
  {
    name: "batch-summed A B^T",
    a: [3, 36, 300],
    b: [3, 44, 300],
    transB: true,
    opts: () => ({ sumBatch: true }),
  },
  {
    name: "A^T B + bias + residual, ReLU",
    a: [264, 40],
    b: [264, 76],
    transA: true,
    opts: (d) => ({
      bias: randn([40], { device: d, seed: 5 }),
      residual: randn([40, 76], { device: d, seed: 6 }),
      relu: true,
    }),
  },
  // The moments epilogue keeps BN >= BM: three candidates.
  {
    name: "batched A B + moments",
    a: [2, 72, 256],
    b: [2, 256, 100],
    opts: () => ({ moments: { part: null } }),
  },
];

Deno.test({
  name: "tuner: a tuned GEMM gives the rule's tile's bits before the timings and the chosen tile's after",
  ignore,
  fn: async () => {
    const tuned = await openDevice({ profile: "gpu", benchmark: true });
    const plain = await openDevice({ profile: "gpu" });
    try {
      assert(plain.tuner === null, "no tuner unless asked for (CSN_BENCHMARK unset)");
      const run = (d: Device, p: Product, v?: { tile: GemmTile; prefetch: boolean; deepSplit: boolean }) => {
        const a = randn(p.a, { device: d, seed: 1 }), b = randn(p.b, { device: d, seed: 2 });
        const o = p.opts?.(d) ?? {};
        const y = gemm("gemm", a, b, !!p.transA, !!p.transB, { ...o, ...v });
        return { y, moments: o.moments as GemmMoments | undefined };
      };
      const first = products.map((p) => run(tuned, p));
      const n = tuned.tuner!.pending;
      assert(n === products.length, `${products.length} keys pending, got ${n}`);
      for (const [i, p] of products.entries()) {
        const r = run(plain, p);
        await assertSameBits(first[i].y, r.y, `${p.name}: first call`);
        if (r.moments) {
          assert(r.moments.part && first[i].moments?.part, `${p.name}: moments from the tile`);
          await assertSameBits(first[i].moments!.part!, r.moments.part, `${p.name}: first call's moments`);
        }
      }
      await tuned.sync();
      const ds = tuned.tuner!.decisions();
      assert(ds.length === products.length, `${products.length} decisions, got ${ds.length}`);
      for (const [i, p] of products.entries()) {
        const d = ds.find((x) => x.key.includes(`[${p.a}]`) && x.key.includes(`[${p.b}]`))!;
        assert(d, `${p.name}: decided`);
        // Each tile (with moments, those with BN >= BM) with and without prefetch.
        const n = p.opts?.(plain).moments ? 6 : 8;
        assert(d.candidates.length === n, `${p.name}: candidates ${d.candidates}`);
        assert(d.ms.every((m) => m !== null && m > 0), `${p.name}: every candidate timed`);
        // "128x64", "128x64 prefetch" or "64x64 shallow split".
        const label = d.candidates[d.chosen];
        const [tm, tn] = label.split(" ")[0].split("x").map((v) => Number(v) / 16);
        const v = {
          tile: [tm, tn] as GemmTile,
          prefetch: label.includes("prefetch"),
          deepSplit: !label.includes("shallow"),
        };
        const again = run(tuned, p), forced = run(plain, p, v);
        await assertSameBits(again.y, forced.y, `${p.name}: after tuning (${d.candidates[d.chosen]})`);
        // Tiles differ in their K split, so results agree to round-off.
        assertClose(
          await again.y.toArray() as Float32Array,
          await first[i].y.toArray() as Float32Array,
          `${p.name}: tuned vs rule`,
          1e-5,
        );
      }
    } finally {
      tuned.destroy();
      plain.destroy();
    }
  },
});

/** One training step's conv: y, and the gradients of x and w through autograd. */
async function convStep(d: Device) {
  const x = randn([2, 20, 5, 9, 11], { device: d, seed: 1, requiresGrad: true });
  const w = randn([24, 20, 3, 3, 3], { device: d, seed: 2, requiresGrad: true });
  const r = randn([2, 24, 5, 9, 11], { device: d, seed: 3 });
  const y = F.conv3d(x, w, null, { padding: [1, 1, 1] });
  F.sum(F.mul(y, r)).backward();
  return {
    y: await y.toArray() as Float32Array,
    gx: await x.grad!.toArray() as Float32Array,
    gw: await w.grad!.toArray() as Float32Array,
  };
}

Deno.test({
  name:
    "tuner: a 3x3x3 conv's forward and gradients, tuned: the rule's bits before the timings, as close after",
  ignore,
  fn: async () => {
    const tuned = await openDevice({ profile: "gpu", benchmark: true });
    const plain = await openDevice({ profile: "gpu" });
    try {
      const ref = await convStep(plain);
      const first = await convStep(tuned);
      const ds = tuned.tuner!.decisions().filter((x) => x.key.startsWith("conv "));
      // Three tiles, each with and without prefetch; im2col + GEMM for the forward and the weight gradient.
      const want = { "forward": 7, "input gradient": 6, "weight gradient": 7 };
      for (const [which, n] of Object.entries(want)) {
        const d = ds.find((x) => x.key.startsWith(`conv ${which} `));
        assert(d?.candidates.length === n, `${which}: ${n} variants, got ${d?.candidates}`);
        assert(d.ms.every((m) => m !== null && m > 0), `${which}: every variant timed`);
      }
      assert(
        ds.find((x) => x.key.startsWith("conv forward"))!.candidates.includes("im2col"),
        "im2col forward",
      );
      // Before the timings: the rule's tiles, the same bits (the forward and the input gradient sum each
      // output in one order on every tile; the weight gradient's K split depends on the tile).
      sameBits(first.y, ref.y, "first step: y");
      sameBits(first.gx, ref.gx, "first step: grad x");
      sameBits(first.gw, ref.gw, "first step: grad w");
      const second = await convStep(tuned);
      assertClose(second.y, ref.y, "second step: y", 1e-5);
      assertClose(second.gx, ref.gx, "second step: grad x", 1e-5);
      assertClose(second.gw, ref.gw, "second step: grad w", 1e-5);
    } finally {
      tuned.destroy();
      plain.destroy();
    }
  },
});

Deno.test({
  name:
    "tuner: loaded decisions run without timing (im2col + GEMM forced for the forward and weight gradient)",
  ignore,
  fn: async () => {
    const first = await openDevice({ profile: "gpu", benchmark: true });
    const forced = await openDevice({ profile: "gpu", benchmark: true, profiling: true });
    const plain = await openDevice({ profile: "gpu" });
    try {
      await convStep(first);
      // Through JSON, as a run folder would keep them; im2col chosen wherever it was a candidate.
      const saved = JSON.parse(JSON.stringify(first.tuner!.decisions())) as ReturnType<Tuner["decisions"]>;
      const im2col = saved.filter((d) => d.candidates.includes("im2col"));
      assert(
        im2col.length === 2,
        `forward and weight gradient offer im2col, got ${im2col.map((d) => d.key)}`,
      );
      for (const d of im2col) d.chosen = d.candidates.indexOf("im2col");
      forced.tuner!.load(im2col);
      const ref = await convStep(plain);
      const got = await convStep(forced);
      const fresh = forced.tuner!.decisions().slice(im2col.length).map((d) => d.key).filter((k) =>
        k.startsWith("conv ")
      );
      assert(
        fresh.length === 1 && fresh[0].startsWith("conv input gradient"),
        `only the input gradient timed: ${fresh}`,
      );
      const names = forced.profiler!.stats().map((k) => k.name);
      assert(names.some((n) => n.includes("[x,col]")), `im2col kernels ran: ${names}`);
      assertClose(got.y, ref.y, "im2col forward", 1e-5);
      assertClose(got.gx, ref.gx, "input gradient", 1e-5);
      assertClose(got.gw, ref.gw, "im2col weight gradient", 1e-5);
      assertThrows(
        () => forced.tuner!.load([{ key: "k", candidates: ["a"], ms: [1], chosen: 3 }]),
        "decision for k has no candidate 3",
      );
    } finally {
      first.destroy();
      forced.destroy();
      plain.destroy();
    }
  },
});

Deno.test({
  name:
    "implicit convs with prefetch: every gather tile, forced through loaded decisions, as the plain device",
  ignore,
  fn: async () => {
    const plain = await openDevice({ profile: "gpu" });
    try {
      const ref = await convStep(plain);
      // All of lavapipe's workgroup memory (tables and padding), and WebGPU's guaranteed 16 KiB (the 128 x 128
      // tile without tables: each element's k_info computed as it is gathered).
      for (const maxWorkgroupStorage of [undefined, 16384]) {
        const probe = await openDevice({ profile: "gpu", benchmark: true, maxWorkgroupStorage });
        await convStep(probe);
        const saved = probe.tuner!.decisions().filter((d) => d.key.startsWith("conv "));
        probe.destroy();
        const tiles = saved[0].candidates.filter((c) => c.endsWith(" prefetch"));
        assert(tiles.length === (maxWorkgroupStorage ? 2 : 3), `prefetch tiles: ${tiles}`);
        for (const tile of tiles) {
          const d = await openDevice({ profile: "gpu", benchmark: true, maxWorkgroupStorage });
          try {
            d.tuner!.load(saved.map((x) => ({ ...x, chosen: x.candidates.indexOf(tile) })));
            const got = await convStep(d);
            const what = `${tile}${maxWorkgroupStorage ? " in 16 KiB" : ""}`;
            assert(d.tuner!.decisions().length === saved.length, `${what}: nothing timed again`);
            // The forward and the input gradient sum each output in the same order as without prefetch.
            sameBits(got.y, ref.y, `${what}: y`);
            sameBits(got.gx, ref.gx, `${what}: grad x`);
            assertClose(got.gw, ref.gw, `${what}: grad w`, 1e-5);
          } finally {
            d.destroy();
          }
        }
      }
    } finally {
      plain.destroy();
    }
  },
});

Deno.test({
  name: "tuner: tuning trials stay out of the per-kernel profile",
  ignore,
  fn: async () => {
    const device = await openDevice({ profile: "gpu", benchmark: true, profiling: true });
    try {
      const a = randn([64, 256], { device, seed: 1 }), b = randn([256, 64], { device, seed: 2 });
      await gemm("tuned gemm", a, b, false, false).toArray();
      const s = device.profiler!.stats().filter((k) => k.name.startsWith("tuned gemm"));
      const count = s.reduce((t, k) => t + k.count, 0);
      assert(count === 1, `one profiled dispatch of the product, got ${count}`);
      assert(device.tuner!.decisions().length === 1, "and one decision");
    } finally {
      device.destroy();
    }
  },
});
