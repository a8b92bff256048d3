/**
 * Kernel code generation: named uniforms (u32 / i32 / f32) reach the shader, and sizes stay out of the
 * source, so an op at a new shape of the same size class reuses its pipeline.
 */
import { F, openDevice, randn, Tensor, tensor } from "../mod.ts";
import { launch1d, sourceCache } from "../kernels/codegen.ts";
import { assertThrows } from "./helpers.ts";

function assertEquals(a: unknown, b: unknown): void {
  if (JSON.stringify(a) !== JSON.stringify(b)) {
    throw new Error(`${JSON.stringify(a)} != ${JSON.stringify(b)}`);
  }
}

Deno.test("codegen: named uniforms and shape-independent pipelines", async (t) => {
  const device = await openDevice();
  await t.step("u32, i32 and f32 uniforms", async () => {
    const out = Tensor.empty(device, [3], "f32", "test");
    launch1d({
      op: "test.uniforms",
      args: [{ name: "o", t: out, write: true }],
      n: 1,
      uniforms: { a: 4000000000, b: { i: -7 }, c: { f: 0.25 } },
      body: `  o_st(0u, f32(sh.a / 1000000u)); o_st(1u, f32(sh.b)); o_st(2u, sh.c);`,
    });
    assertEquals(Array.from(await out.toArray()), [4000, -7, 0.25]);
    out.dispose();
  });
  await t.step("divisor uniforms: exact div_/mod_ over the whole u32 range", async () => {
    const xs = new Uint32Array(4096);
    let seed = 12345;
    const rnd = () => (seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0);
    for (let i = 0; i < xs.length; i++) {
      // Random values, values near multiples of the divisor and near 2^32.
      xs[i] = i % 4 === 0
        ? rnd()
        : i % 4 === 1
        ? rnd() >>> (rnd() % 32)
        : i % 4 === 2
        ? 0xffffffff - (i % 97)
        : i;
    }
    const x = tensor(new Int32Array(xs.buffer), [xs.length], { device, dtype: "i32" });
    for (const d of [1, 2, 3, 7, 64, 96, 1000, 4096 * 3 + 1, 65535, 1000003, 2 ** 24 + 5, 2 ** 29 + 11]) {
      const q = Tensor.empty(device, [xs.length], "i32", "test"),
        r = Tensor.empty(device, [xs.length], "i32", "test");
      for (let k = 0; k < xs.length; k++) {
        if (k % 8 === 7) xs[k] = d * (rnd() % Math.floor(0xffffffff / d)) - (k % 3);
      }
      const xt = tensor(new Int32Array(xs.buffer), [xs.length], { device, dtype: "i32" });
      launch1d({
        op: "test.udiv",
        args: [{ name: "x", t: xt }, { name: "q", t: q, write: true }, { name: "r", t: r, write: true }],
        n: xs.length,
        uniforms: { D: { d } },
        body: `  let v = bitcast<u32>(x_ld(gid));
  q_st(gid, bitcast<i32>(div_D(v)));
  r_st(gid, bitcast<i32>(mod_D(v)));`,
      });
      const [qa, ra] = [
        new Uint32Array((await q.toArray()).buffer),
        new Uint32Array((await r.toArray()).buffer),
      ];
      for (let k = 0; k < xs.length; k++) {
        const want = Math.floor(xs[k] / d);
        if (qa[k] !== want || ra[k] !== xs[k] - want * d) {
          throw new Error(`${xs[k]} / ${d}: got ${qa[k]} rem ${ra[k]}, want ${want} rem ${xs[k] - want * d}`);
        }
      }
      for (const z of [q, r, xt]) z.dispose();
    }
    x.dispose();
  });
  await t.step("bad uniforms are refused with the op's name", () => {
    const out = Tensor.empty(device, [1], "f32", "test");
    const run = (uniforms: Record<string, number>) =>
      launch1d({ op: "test.bad", args: [{ name: "o", t: out, write: true }], n: 1, uniforms, body: "" });
    assertThrows(() => run({ n_: 1 }), "test.bad: uniform name");
    assertThrows(() => run({ a: -1 }), "test.bad: uniform a = -1 is not a u32");
    out.dispose();
  });
  await t.step("one pipeline for a broadcast add at two shapes (same size classes)", async () => {
    // [2, 30, 40] and [2, 31, 40] floats (9600 and 9920 B) share a pool size class, as do the biases.
    const run = async (h: number) => {
      const x = randn([2, h, 40], { device, seed: 1 }), b = randn([1, h, 1], { device, seed: 2 });
      const y = F.add(x, b);
      const [xa, ba, ya] = [await x.toArray(), await b.toArray(), await y.toArray()];
      for (let i = 0; i < ya.length; i++) {
        assertEquals(ya[i], Math.fround(xa[i] + ba[Math.floor(i / 40) % h]));
      }
      for (const z of [x, b, y]) z.dispose();
    };
    await run(30);
    const p0 = device.stats().pipelines;
    await run(31);
    assertEquals(device.stats().pipelines - p0, 0);
  });
  await t.step("AdamW-style 1-D kernels: item count is a uniform", async () => {
    const p0 = device.stats().pipelines;
    for (const n of [5, 6, 7]) {
      const x = tensor(Float32Array.from({ length: n }, (_, i) => i), [n], { device });
      const y = F.mul(x, 2);
      assertEquals(Array.from(await y.toArray()), Array.from({ length: n }, (_, i) => 2 * i));
      x.dispose(), y.dispose();
    }
    assertEquals(device.stats().pipelines - p0, 1);
  });
  device.destroy();
});

Deno.test("submitEvery: recorded dispatches go to the GPU in batches of that many, same results", async () => {
  const run = async (every: number) => {
    const d = await openDevice({ submitEvery: every });
    try {
      const x = tensor(Float32Array.from({ length: 50 }, (_, i) => i / 7), [50], { device: d });
      const before = d.stats().submits;
      let y = x;
      for (let i = 0; i < 10; i++) y = F.add(F.mul(y, x), x); // 20 dispatches
      const submits = d.stats().submits - before;
      return { v: (await y.toArray()).join(), submits };
    } finally {
      d.destroy();
    }
  };
  const all = await run(0), batched = await run(8);
  if (batched.v !== all.v) throw new Error("results differ");
  if (all.submits !== 0 || batched.submits !== 2) {
    throw new Error(`submits before the read: ${all.submits} (every 0), ${batched.submits} (every 8)`);
  }
  const prev = Deno.env.get("CSN_SUBMIT_EVERY");
  try {
    Deno.env.set("CSN_SUBMIT_EVERY", "-1");
    let msg = "";
    await openDevice().then((d) => d.destroy(), (e) => (msg = (e as Error).message));
    if (!msg.includes(`CSN_SUBMIT_EVERY must be an integer >= 0, got "-1"`)) {
      throw new Error(`error was "${msg}"`);
    }
  } finally {
    if (prev === undefined) Deno.env.delete("CSN_SUBMIT_EVERY");
    else Deno.env.set("CSN_SUBMIT_EVERY", prev);
  }
});

Deno.test("env CSN_KERNELS picks the kernel profile; a bad value is a clear error", async () => {
  const prev = Deno.env.get("CSN_KERNELS");
  try {
    for (const want of ["gpu", "cpu"] as const) {
      Deno.env.set("CSN_KERNELS", want);
      const d = await openDevice();
      const got = d.profile;
      d.destroy();
      if (got !== want) throw new Error(`CSN_KERNELS=${want} gave profile ${got}`);
    }
    Deno.env.set("CSN_KERNELS", "tpu");
    let msg = "";
    try {
      (await openDevice()).destroy();
    } catch (e) {
      msg = (e as Error).message;
    }
    if (!msg.includes(`CSN_KERNELS must be "cpu" or "gpu", got "tpu"`)) throw new Error(`error was "${msg}"`);
  } finally {
    if (prev === undefined) Deno.env.delete("CSN_KERNELS");
    else Deno.env.set("CSN_KERNELS", prev);
  }
});

Deno.test("keyed sources: generated once per key and head; a key that misses a parameter is caught", async () => {
  const device = await openDevice();
  const out = Tensor.empty(device, [1], "f32", "test");
  let generated = 0;
  const run = (key: string, v: number, decls = "") =>
    launch1d({
      op: "test.keyed",
      args: [{ name: "o", t: out, write: true }],
      n: 1,
      key,
      decls,
      body: () => (generated++, `  o_st(0u, ${v}.0);`),
    });
  const was = sourceCache.check;
  try {
    sourceCache.check = false;
    run("a", 1);
    run("a", 1);
    assertEquals(generated, 1);
    assertEquals(Array.from(await out.toArray()), [1]);
    // Without the check a key that misses the value reuses the first source: the bug the check exists for.
    run("a", 2);
    assertEquals(Array.from(await out.toArray()), [1]);
    run("b", 2);
    assertEquals(Array.from(await out.toArray()), [2]);
    // Text given as a string is part of the key.
    run("a", 3, "const UNUSED: u32 = 3u;");
    assertEquals(Array.from(await out.toArray()), [3]);
    // A new head (here a second argument) is a new source under the same key.
    const before = generated;
    const other = Tensor.empty(device, [1], "f32", "test");
    launch1d({
      op: "test.keyed",
      args: [{ name: "o", t: out, write: true }, { name: "q", t: other }],
      n: 1,
      key: "a",
      body: () => (generated++, `  o_st(0u, 4.0);`),
    });
    assertEquals(generated, before + 1);
    assertEquals(Array.from(await out.toArray()), [4]);
    other.dispose();
    sourceCache.check = true;
    assertThrows(() => run("a", 5), 'the key "a" stands for two different sources');
    run("a", 1);
  } finally {
    sourceCache.check = was;
    out.dispose();
    device.destroy();
  }
});
