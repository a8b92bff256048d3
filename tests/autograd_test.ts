/**
 * Autograd engine, memory scopes and error messages: a finite-difference check of a composite, gradient
 * accumulation, graph freeing, a 1,000-step loop with flat live GPU bytes and no new bind groups, the buffer
 * pool's order, and clear errors for bad calls.
 */
import { F, keep, noGrad, openDevice, optim, randn, type Tensor, tensor, tidy, zeros } from "../mod.ts";
import { BufferPool } from "../core/buffer_pool.ts";
import { assertClose, prng, randData } from "./helpers.ts";
import { TOY_SHAPE, toyModel } from "./fixtures/toy_task.ts";

const device = await openDevice();

function assertThrows(fn: () => unknown, ...parts: string[]): void {
  try {
    fn();
  } catch (e) {
    const msg = (e as Error).message;
    for (const p of parts) {
      if (!msg.includes(p)) throw new Error(`error "${msg}" does not mention "${p}"`);
    }
    return;
  }
  throw new Error(`expected an error mentioning ${parts.join(", ")}`);
}

async function assertRejects(fn: () => Promise<unknown>, ...parts: string[]): Promise<void> {
  try {
    await fn();
  } catch (e) {
    const msg = (e as Error).message;
    for (const p of parts) if (!msg.includes(p)) throw new Error(`error "${msg}" does not mention "${p}"`);
    return;
  }
  throw new Error(`expected an error mentioning ${parts.join(", ")}`);
}

Deno.test("finite differences agree with backward on a composite", async () => {
  const rng = prng(7);
  const xd = randData(rng, 3 * 4, -1, 1), wd = randData(rng, 4 * 5, -1, 1), cd = randData(rng, 5, -1, 1);
  const loss = (x: Tensor, w: Tensor, c: Tensor) => {
    const h = F.matmul(x, w);
    const a = F.mul(F.tanh(h), F.sigmoid(F.add(h, c)));
    const s = F.softmax(F.mul(h, 0.5), -1);
    return F.add(F.sum(F.mul(a, a)), F.mean(F.mul(s, F.exp(F.mul(c, 0.3)))));
  };
  const grads = await tidy(async () => {
    const x = tensor(xd, [3, 4], { device, requiresGrad: true });
    const w = tensor(wd, [4, 5], { device, requiresGrad: true });
    const c = tensor(cd, [5], { device, requiresGrad: true });
    loss(x, w, c).backward();
    return [await x.grad!.toArray(), await w.grad!.toArray(), await c.grad!.toArray()];
  });
  // Central differences in f32 with a step large enough to dominate rounding.
  const eps = 1e-2;
  const datas = [xd, wd, cd];
  const shapes = [[3, 4], [4, 5], [5]];
  const evalAt = (k: number, i: number, delta: number) =>
    tidy(async () => {
      const ins = datas.map((d, j) => {
        const copy = [...d];
        if (j === k) copy[i] += delta;
        return tensor(copy, shapes[j], { device });
      });
      return await loss(ins[0], ins[1], ins[2]).item();
    });
  for (let k = 0; k < 3; k++) {
    const n = datas[k].length;
    const idx = [0, Math.floor(n / 2), n - 1];
    const fd: number[] = [], an: number[] = [];
    for (const i of idx) {
      fd.push(((await evalAt(k, i, eps)) - (await evalAt(k, i, -eps))) / (2 * eps));
      an.push(grads[k][i]);
    }
    assertClose(an, fd, `input ${k}`, 2e-2, 2e-3);
  }
});

Deno.test("gradients accumulate; retainGraph; second backward without it fails clearly", async () => {
  await tidy(async () => {
    const x = tensor([1, 2, 3], [3], { device, requiresGrad: true });
    const y = F.sum(F.mul(x, x));
    y.backward(undefined, { retainGraph: true });
    y.backward();
    assertClose(await x.grad!.toArray(), [4, 8, 12], "accumulated grad", 0, 1e-6);
    assertThrows(() => y.backward(), "freed", "retainGraph");
    const z = F.sum(F.mul(x, 3));
    z.backward();
    assertClose(await x.grad!.toArray(), [7, 11, 15], "grad after another loss", 0, 1e-6);
  });
});

Deno.test("noGrad records nothing; backward on a non-grad tensor errors", () => {
  tidy(() => {
    const x = tensor([1, 2], [2], { device, requiresGrad: true });
    const y = noGrad(() => F.mul(x, 2));
    if (y.requiresGrad || y.node) throw new Error("noGrad recorded a node");
    assertThrows(() => F.sum(y).backward(), "does not require grad");
    assertThrows(() => F.mul(x, 2).backward(), "single-element");
  });
});

Deno.test("tidy frees intermediates and keeps returned tensors", async () => {
  const before = device.stats().liveBytes;
  const kept = tidy(() => {
    const a = randn([64, 64], { device, seed: 1 });
    const b = F.exp(a);
    const c = F.mul(b, 2);
    return { c, list: [F.sum(c)] };
  });
  const mid = device.stats().liveBytes;
  if (kept.c.disposed || kept.list[0].disposed) throw new Error("returned tensor was disposed");
  const v = await kept.list[0].item();
  if (!(v > 0)) throw new Error("bad value");
  kept.c.dispose();
  kept.list[0].dispose();
  const after = device.stats().liveBytes;
  if (after !== before) throw new Error(`live bytes ${after} != ${before} after disposing`);
  if (mid <= before) throw new Error("nothing was alive in between");
});

Deno.test("a dropped graph frees its saved activations without backward", () => {
  const before = device.stats().liveBytes;
  const w = keep(randn([32, 32], { device, seed: 2 }).requireGrad());
  const base = device.stats().liveBytes;
  tidy(() => {
    const x = randn([16, 32], { device, seed: 3 });
    const loss = F.sum(F.tanh(F.matmul(F.relu(F.matmul(x, w)), w)));
    return loss.requiresGrad; // loss and its graph die with the scope
  });
  if (device.stats().liveBytes !== base) throw new Error(`leaked ${device.stats().liveBytes - base} bytes`);
  w.dispose();
  if (device.stats().liveBytes !== before) throw new Error("parameter not freed");
});

Deno.test("1,000 forward/backward steps keep live GPU bytes flat and make no bind groups after the first", async () => {
  const params = [
    keep(randn([24, 32], { device, seed: 10, std: 0.2 }).requireGrad()),
    keep(zeros([32], { device }).requireGrad()),
    keep(randn([32, 5], { device, seed: 11, std: 0.2 }).requireGrad()),
  ];
  const x = keep(randn([16, 24], { device, seed: 12 }));
  const target = keep(F.softmax(randn([16, 5], { device, seed: 13 }), -1));
  const step = () =>
    tidy(() => {
      const h = F.relu(F.add(F.matmul(x, params[0]), params[1]));
      const logp = F.logSoftmax(F.matmul(h, params[2]), -1);
      const loss = F.neg(F.mean(F.sum(F.mul(target, logp), -1)));
      loss.backward();
      noGrad(() => {
        for (let i = 0; i < params.length; i++) {
          const p = params[i];
          const next = keep(F.sub(p, F.mul(p.grad!, 0.1)).requireGrad());
          p.dispose();
          params[i] = next;
        }
      });
      return keep(loss);
    });
  const first = step();
  const l0 = await first.item();
  first.dispose();
  let live10 = 0, groups10 = 0;
  let last: Tensor | null = null;
  for (let i = 1; i < 1000; i++) {
    last?.dispose();
    last = step();
    if (i === 10) live10 = device.stats().liveBytes, groups10 = device.stats().bindGroups;
  }
  const live = device.stats().liveBytes;
  // Deno frees a bind group only when V8 collects it, and lavapipe maps memory for each: one per dispatch
  // exhausted the process's memory mappings in long test runs (a crash in lavapipe).
  const groups = device.stats().bindGroups - groups10;
  if (groups !== 0) {
    throw new Error(`${groups} bind groups made in steps 11-999 (the same buffers every step)`);
  }
  const l1 = await last!.item();
  last!.dispose();
  if (live !== live10) throw new Error(`live bytes grew from ${live10} to ${live}`);
  if (!(l1 < l0)) throw new Error(`loss did not decrease (${l0} -> ${l1})`);
  for (const p of params) p.dispose();
  x.dispose();
  target.dispose();
});

Deno.test("a CSN classifier's training steps bind the same buffers every step (no bind groups after the second)", async () => {
  const model = toyModel(device, 3);
  const opt = new optim.AdamW(model.parameters(), { lr: 1e-3 });
  const x = keep(randn([2, 1, ...TOY_SHAPE], { device, seed: 4 }));
  const y = keep(tensor(Int32Array.from([0, 2]), { device }));
  const made: number[] = [];
  for (let s = 0; s < 4; s++) {
    const before = device.stats().bindGroups;
    const loss = tidy(() => {
      const l = F.crossEntropy(model.forward(x), y);
      l.backward();
      return l;
    });
    opt.step();
    opt.zeroGrad();
    await loss.item();
    loss.dispose();
    made.push(device.stats().bindGroups - before);
  }
  // Last-in-first-out reuse permuted the buffers from step to step: ~650 new bind groups a step.
  if (made[2] !== 0 || made[3] !== 0) throw new Error(`bind groups made per step: ${made}`);
  if (made[0] === 0) throw new Error("the first step made no bind groups: the count is not kept");
  model.dispose();
  opt.dispose();
  x.dispose();
  y.dispose();
});

Deno.test("the buffer pool hands out the oldest free buffer of a class, whatever the release order", () => {
  const pool = new BufferPool(device.gpu, GPUBufferUsage.STORAGE, device.info.maxBufferSize);
  const bufs = [0, 1, 2, 3].map(() => pool.acquire(1000, "test"));
  for (const order of [[2, 0, 3, 1], [3, 2, 1, 0], [0, 1, 2, 3]]) {
    for (const i of order) pool.release(bufs[i], 1000);
    const got = [0, 1, 2, 3].map(() => bufs.indexOf(pool.acquire(1000, "test")));
    if (got.join() !== "0,1,2,3") throw new Error(`released ${order}, handed out ${got}`);
  }
  if (pool.stats().created !== 4) throw new Error(`created ${pool.stats().created} buffers, not 4`);
  for (const b of bufs) pool.release(b, 1000);
  pool.trim();
});

Deno.test("bad calls name the op and the shapes", async () => {
  const other = await openDevice({ label: "second" });
  try {
    tidy(() => {
      const a = zeros([2, 3], { device });
      const b = zeros([4], { device });
      assertThrows(() => F.add(a, b), "F.add", "[2,3]", "[4]", "broadcastable");
      assertThrows(() => F.matmul(a, a), "F.matmul", "[2,3]", "3 vs 2");
      assertThrows(() => F.add(a, zeros([2, 3], { device, dtype: "i32" })), "F.add", "dtypes differ", "i32");
      assertThrows(() => F.exp(zeros([2], { device, dtype: "i32" })), "F.exp", "f32", "i32");
      assertThrows(() => F.mul(a, zeros([2, 3], { device: other })), "F.mul", "different devices");
      assertThrows(() => F.sum(a, 2), "F.sum", "axis 2");
      assertThrows(() => F.permute(a, [0, 0]), "F.permute", "not a permutation");
      assertThrows(() => a.reshape([4, 2]), "reshape", "[2,3]", "[4,2]");
      assertThrows(() => tensor([1, 2, 3], [2, 2], { device }), "tensor", "3 values", "[2,2]");
      const d = zeros([5], { device });
      d.dispose();
      assertThrows(() => F.relu(d), "F.relu", "[5]", "disposed");
    });
    const d = zeros([5], { device });
    d.dispose();
    await assertRejects(() => d.toArray(), "toArray", "disposed");
  } finally {
    other.destroy();
  }
});

Deno.test("seeded random tensors are reproducible and have the right moments", async () => {
  const a = Array.from(await tidy(() => randn([4096], { device, seed: 5 }).toArray()));
  const b = await tidy(() => randn([4096], { device, seed: 5 }).toArray());
  assertClose(a, b, "same seed", 0, 0);
  const mean = a.reduce((p, v) => p + v, 0) / a.length;
  const sd = Math.sqrt(a.reduce((p, v) => p + (v - mean) ** 2, 0) / a.length);
  if (Math.abs(mean) > 0.06 || Math.abs(sd - 1) > 0.05) throw new Error(`moments off: ${mean}, ${sd}`);
});

Deno.test("u8 tensors round-trip and reshape shares storage", async () => {
  await tidy(async () => {
    const data = new Uint8Array([0, 1, 2, 250, 7, 9, 13]);
    const t = tensor(data, [7], { device });
    if (t.dtype !== "u8") throw new Error("dtype");
    assertClose(await t.toArray(), data, "u8", 0, 0);
    const before = device.stats().liveBytes;
    const v = t.reshape([7, 1]);
    if (device.stats().liveBytes !== before) throw new Error("reshape copied");
    assertClose(await v.toArray(), data, "view", 0, 0);
  });
});

Deno.test("the shared device is released", () => {
  // Destroying every device before exit keeps lavapipe's threads from racing the process teardown.
  device.destroy();
  if (!device.destroyed) throw new Error("device not destroyed");
});

Deno.test("no adapter and oversized buffers give clear errors", async () => {
  // A subprocess whose WebGPU has no backend at all.
  const code = `import { openDevice } from "${new URL("../mod.ts", import.meta.url).href}";
try { await openDevice(); console.log("opened"); } catch (e) { console.log(e.message); }`;
  const o = await new Deno.Command(Deno.execPath(), {
    args: ["eval", code],
    env: { DENO_WEBGPU_BACKEND: "noop", XDG_RUNTIME_DIR: "/tmp" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const msg = new TextDecoder().decode(o.stdout);
  if (!msg.includes("No WebGPU adapter found") || !msg.includes("mesa-vulkan-drivers")) {
    throw new Error(`unexpected output: ${msg} ${new TextDecoder().decode(o.stderr)}`);
  }
  const dev = await openDevice();
  try {
    const n = Math.floor(dev.info.maxBufferSize / 4) + 1024;
    assertThrows(() => zeros([n], { device: dev }), "zeros", "maxBufferSize");
  } finally {
    dev.destroy();
  }
});
