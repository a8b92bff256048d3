/**
 * The per-kernel GPU profiler (`CSN_PROFILE=1`, core/profiler.ts): every dispatch is counted under its kernel
 * name with a positive GPU time, the work estimates turn into rates, profiling off creates no query sets,
 * and the results of a computation are the same bit for bit with and without it.
 */
import { F, openDevice, randn } from "../mod.ts";
import type { Device } from "../core/device.ts";
import { assertRejectsWith } from "./helpers.ts";

function assert(cond: unknown, what: string): asserts cond {
  if (!cond) throw new Error(`assertion failed: ${what}`);
}

function assertEquals(a: unknown, b: unknown, what: string): void {
  const x = JSON.stringify(a), y = JSON.stringify(b);
  if (x !== y) throw new Error(`${what}: got ${x}, expected ${y}`);
}

/** A few kernels of known dispatch counts: 3 matmuls, 3 adds, 3 relus (and 2 randn fills). */
async function compute(device: Device): Promise<Float32Array> {
  const a = randn([32, 48], { device, seed: 1 }), b = randn([48, 40], { device, seed: 2 });
  const c = randn([32, 40], { device, seed: 3 });
  let y = c;
  for (let i = 0; i < 3; i++) y = F.relu(F.add(F.matmul(a, b), y));
  return await y.toArray() as Float32Array;
}

/** Counts query sets created on GPUDevice while `fn` runs. */
async function countQuerySets<T>(fn: () => Promise<T>): Promise<{ value: T; created: number }> {
  const proto = GPUDevice.prototype as unknown as {
    createQuerySet: (d: GPUQuerySetDescriptor) => GPUQuerySet;
  };
  const orig = proto.createQuerySet;
  let created = 0;
  proto.createQuerySet = function (this: GPUDevice, d: GPUQuerySetDescriptor) {
    created++;
    return orig.call(this, d);
  };
  try {
    return { value: await fn(), created };
  } finally {
    proto.createQuerySet = orig;
  }
}

async function hasTimestamps(): Promise<boolean> {
  const a = await navigator.gpu.requestAdapter();
  return !!a?.features.has("timestamp-query");
}

Deno.test({
  name: "profiler: counts and times every dispatch per kernel; results unchanged; off creates no query sets",
  ignore: !(await hasTimestamps()),
  fn: async () => {
    const off = await countQuerySets(async () => {
      const device = await openDevice({ profiling: false });
      try {
        assertEquals(device.profiler, null, "profiler off");
        return await compute(device);
      } finally {
        device.destroy();
      }
    });
    assertEquals(off.created, 0, "profiling off must not create query sets");

    const on = await countQuerySets(async () => {
      const device = await openDevice({ profiling: true });
      try {
        const p = device.profiler!;
        assert(p !== null, "profiler on");
        const before = device.stats().dispatches;
        const out = await compute(device);
        const dispatched = device.stats().dispatches - before;
        const stats = p.stats();
        // Keys are the op name and the kernel's storage bindings, e.g. "F.matmul [a,b,c]".
        const byName = new Map(stats.map((s) => [s.name.replace(/ \[.*\]$/, ""), s]));
        const addKey = stats.find((s) => s.name.startsWith("F.add"))?.name ?? "";
        assert(/^F\.add \[\w+(,\w+)+\]$/.test(addKey), `key of F.add: ${addKey}`);
        for (const k of ["F.matmul", "F.add", "F.relu"]) {
          const s = byName.get(k);
          assert(s, `kernel ${k} missing from the profile (${stats.map((x) => x.name).join(", ")})`);
          assertEquals(s.count, 3, `${k} dispatch count`);
          assert(s.ms > 0, `${k} time ${s.ms} ms`);
          assert(s.gbs > 0, `${k} rate`);
        }
        assertEquals(stats.reduce((t, s) => t + s.count, 0), dispatched, "every dispatch timed once");
        const mm = byName.get("F.matmul")!;
        assert(mm.gflops !== null && mm.gflops > 0, `F.matmul gives its FLOPs: ${mm.gflops}`);
        assertEquals(mm.flops, 3 * 2 * 32 * 48 * 40, "F.matmul FLOPs");
        assert(Math.abs(stats.reduce((t, s) => t + s.share, 0) - 1) < 1e-9, "shares sum to 1");
        const report = await p.report(2);
        assert(report.includes("F.matmul") || report.includes("F.add"), report);
        assert(/\(\d+ others\)/.test(report), report);

        // A dispatch with a FLOP estimate gets a GFLOP/s rate.
        const x = randn([8, 8], { device, seed: 4 });
        p.reset();
        assertEquals(p.stats().length, 0, "stats after reset");
        const s = x.storage("test");
        device.dispatch(
          "test.scale",
          `@group(0) @binding(0) var<storage, read_write> v: array<f32>;
@compute @workgroup_size(64) fn main(@builtin(global_invocation_id) g: vec3<u32>) {
  if (g.x < 64u) { v[g.x] = v[g.x] * 2.0; }
}`,
          [{ buffer: s.buffer, offset: 0, size: 256, write: true }],
          null,
          [1, 1, 1],
          { flops: 64 },
        );
        await device.sync();
        const t = p.stats();
        assertEquals(
          t.map((k) => [k.name, k.count]),
          [["test.scale [v]", 1]],
          "reset drops earlier dispatches",
        );
        assert(t[0].gflops !== null && t[0].gflops > 0, `GFLOP/s ${t[0].gflops}`);
        x.dispose();
        return out;
      } finally {
        device.destroy();
      }
    });
    assert(on.created > 0, "profiling on creates a query set");
    assertEquals(Array.from(on.value), Array.from(off.value), "results identical with and without profiling");
  },
});

Deno.test("profiler: asking for profiling without timestamp-query is a clear error", async () => {
  if (await hasTimestamps()) {
    // The adapter has the feature: the option must be honoured, not refused.
    const device = await openDevice({ profiling: true });
    assert(device.profiler !== null, "profiler on");
    device.destroy();
    return;
  }
  await assertRejectsWith(openDevice({ profiling: true }), "profiling", "timestamp-query");
});
