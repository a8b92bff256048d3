/**
 * Every op of the engine core against PyTorch, forward and backward, on odd shapes, broadcasting, batch > 1,
 * and again on a device whose binding cap and dispatch-grid cap are tiny, so every tensor is split across
 * several bindings and every dispatch over a 2-D grid. Tolerance: rtol 1e-4 (fp32), atol 1e-5 x max|ref|.
 */
import { F, openDevice, type Tensor, tensor, tidy } from "../mod.ts";
import { assertClose, prng, randData, torchRef } from "./helpers.ts";
import { type Case, CaseSuite, f, pos } from "./cases.ts";

const cases: Case[] = [];
const add = (c: Case) => cases.push(c);

// Unary, on an odd shape (scalar path) and a multiple-of-4 shape (vec4 path).
for (const shape of [[3, 5, 7], [2, 4, 6]]) {
  const s = shape.join("x");
  add({ name: `neg ${s}`, inputs: [f(shape)], py: "-a", ts: (a) => F.neg(a) });
  add({ name: `exp ${s}`, inputs: [f(shape)], py: "torch.exp(a)", ts: (a) => F.exp(a) });
  add({ name: `log ${s}`, inputs: [pos(shape)], py: "torch.log(a)", ts: (a) => F.log(a) });
  add({ name: `sqrt ${s}`, inputs: [pos(shape)], py: "torch.sqrt(a)", ts: (a) => F.sqrt(a) });
  add({ name: `abs ${s}`, inputs: [f(shape)], py: "torch.abs(a)", ts: (a) => F.abs(a) });
  add({ name: `relu ${s}`, inputs: [f(shape)], py: "torch.relu(a)", ts: (a) => F.relu(a) });
  add({
    name: `sigmoid ${s}`,
    inputs: [f(shape, { lo: -8, hi: 8 })],
    py: "torch.sigmoid(a)",
    ts: (a) => F.sigmoid(a),
  });
  add({
    name: `tanh ${s}`,
    inputs: [f(shape, { lo: -4, hi: 4 })],
    py: "torch.tanh(a)",
    ts: (a) => F.tanh(a),
  });
  add({ name: `silu ${s}`, inputs: [f(shape, { lo: -6, hi: 6 })], py: "F.silu(a)", ts: (a) => F.silu(a) });
  add({
    name: `clamp ${s}`,
    inputs: [f(shape)],
    py: "torch.clamp(a, -0.5, 0.7)",
    ts: (a) => F.clamp(a, -0.5, 0.7),
  });
}
add({ name: "pow 2", inputs: [f([3, 5])], py: "torch.pow(a, 2)", ts: (a) => F.pow(a, 2) });
add({ name: "pow 3 (negative base)", inputs: [f([3, 5])], py: "torch.pow(a, 3)", ts: (a) => F.pow(a, 3) });
add({ name: "pow 0.5", inputs: [pos([3, 5])], py: "torch.pow(a, 0.5)", ts: (a) => F.pow(a, 0.5) });
add({ name: "pow -1.5", inputs: [pos([3, 5])], py: "torch.pow(a, -1.5)", ts: (a) => F.pow(a, -1.5) });
add({ name: "clamp min only", inputs: [f([7])], py: "torch.clamp(a, min=0.1)", ts: (a) => F.clamp(a, 0.1) });

// Binary with broadcasting and scalars.
const bin: [string, string, (a: Tensor | number, b: Tensor | number) => Tensor][] = [
  ["add", "a + b", F.add],
  ["sub", "a - b", F.sub],
  ["mul", "a * b", F.mul],
  ["div", "a / b", F.div],
  ["maximum", "torch.maximum(a, b)", F.maximum],
  ["minimum", "torch.minimum(a, b)", F.minimum],
];
for (const [name, py, fn] of bin) {
  const bIn = (shape: number[]) => (name === "div" ? pos(shape) : f(shape));
  add({ name: `${name} same 2x3x4`, inputs: [f([2, 3, 4]), bIn([2, 3, 4])], py, ts: (a, b) => fn(a, b) });
  add({ name: `${name} bcast 3x1x5 . 4x1`, inputs: [f([3, 1, 5]), bIn([4, 1])], py, ts: (a, b) => fn(a, b) });
  add({ name: `${name} bcast 1x7 . 5x1`, inputs: [f([1, 7]), bIn([5, 1])], py, ts: (a, b) => fn(a, b) });
  add({
    name: `${name} bcast batch 2x3x5 . 5`,
    inputs: [f([2, 3, 5]), bIn([5])],
    py,
    ts: (a, b) => fn(a, b),
  });
  add({
    name: `${name} scalar right`,
    inputs: [f([3, 5])],
    py: py.replace(/\bb\b/g, "torch.tensor(1.5)"),
    ts: (a) => fn(a, 1.5),
  });
  add({
    name: `${name} scalar left`,
    inputs: [pos([3, 5])],
    py: py.replace(/\ba\b/g, "torch.tensor(2.5)").replace(/\bb\b/g, "a"),
    ts: (a) => fn(2.5, a),
  });
}
add({
  name: "maximum ties",
  inputs: [f([4, 5], { ints: true }), f([4, 5], { ints: true })],
  py: "torch.maximum(a, b)",
  ts: (a, b) => F.maximum(a, b),
});
add({
  name: "where bcast",
  inputs: [{ shape: [3, 1], dtype: "u8", lo: 0, hi: 2, ints: true }, f([3, 4]), f([4])],
  py: "torch.where(a.bool(), b, c)",
  ts: (c, a, b) => F.where(c, a, b),
});
add({
  name: "where f32 cond",
  inputs: [{ shape: [2, 5], lo: -1, hi: 1 }, f([2, 5])],
  py: "torch.where(a > 0, b, torch.tensor(0.5))",
  ts: (c, a) => F.where(F.gt(c, 0), a, 0.5),
});
for (
  const [name, sym] of [["eq", "=="], ["ne", "!="], ["lt", "<"], ["le", "<="], ["gt", ">"], [
    "ge",
    ">=",
  ]] as const
) {
  add({
    name: `${name} bcast`,
    inputs: [{ shape: [3, 5], ints: true }, { shape: [5], ints: true }],
    py: `(a ${sym} b)`,
    ts: (a, b) => (F as any)[name](a, b),
  });
}
add({
  name: "gt u8 scalar",
  inputs: [{ shape: [9], dtype: "u8", lo: 0, hi: 9, ints: true }],
  py: "(a > 4)",
  ts: (a) => F.gt(a, 4),
});
add({
  name: "cast f32->i32",
  inputs: [{ shape: [11], lo: -5, hi: 5 }],
  py: "a.to(torch.int32)",
  ts: (a) => F.cast(a, "i32"),
});
add({
  name: "cast u8->f32",
  inputs: [{ shape: [9], dtype: "u8", lo: 0, hi: 255, ints: true }],
  py: "a.float()",
  ts: (a) => F.cast(a, "f32"),
});
add({
  name: "cast i32->u8",
  inputs: [{ shape: [9], dtype: "i32", lo: 0, hi: 255, ints: true }],
  py: "a.to(torch.uint8)",
  ts: (a) => F.cast(a, "u8"),
});
add({
  name: "add i32",
  inputs: [{ shape: [3, 5], dtype: "i32", lo: -50, hi: 50, ints: true }, {
    shape: [5],
    dtype: "i32",
    lo: -9,
    hi: 9,
    ints: true,
  }],
  py: "a + b",
  ts: (a, b) => F.add(a, b),
});
add({
  name: "broadcastTo",
  inputs: [f([3, 1])],
  py: "a.expand(2, 3, 4)",
  ts: (a) => F.broadcastTo(a, [2, 3, 4]),
});

// Reductions.
add({ name: "sum all", inputs: [f([3, 5, 7])], py: "torch.sum(a)", ts: (a) => F.sum(a) });
add({ name: "sum axis 1", inputs: [f([3, 5, 7])], py: "torch.sum(a, 1)", ts: (a) => F.sum(a, 1) });
add({
  name: "sum axes 0,2 keep",
  inputs: [f([3, 5, 7])],
  py: "torch.sum(a, (0, 2), keepdim=True)",
  ts: (a) => F.sum(a, [0, 2], true),
});
add({
  name: "sum axes 1,3 of 4-D",
  inputs: [f([2, 3, 4, 5])],
  py: "torch.sum(a, (1, 3))",
  ts: (a) => F.sum(a, [1, 3]),
});
add({
  name: "sum axis -1 long rows",
  inputs: [f([5, 300])],
  py: "torch.sum(a, -1)",
  ts: (a) => F.sum(a, -1),
});
add({
  name: "sum long split",
  inputs: [f([3, 9000])],
  py: "torch.sum(a, 1)",
  ts: (a) => F.sum(a, 1),
  rtol: 3e-4,
  big: true,
});
// The cpu profile's lanes take ~1024 values each: vec4 loads where the row length is a multiple of 4, scalar
// ones where not; max over segments too.
add({
  name: "sum long split, odd rows",
  inputs: [f([3, 5003])],
  py: "torch.sum(a, 1)",
  ts: (a) => F.sum(a, 1),
  rtol: 3e-4,
  big: true,
});
add({
  name: "max long split, vec4 rows",
  inputs: [f([2, 4100])],
  py: "torch.amax(a, 1)",
  ts: (a) => F.max(a, 1),
  big: true,
});
add({
  name: "sum split I>1",
  inputs: [f([8200, 3])],
  py: "torch.sum(a, 0)",
  ts: (a) => F.sum(a, 0),
  rtol: 3e-4,
  big: true,
});
// Every axis but the channel (a conv bias's gradient): rows split into segments, then reduced per channel.
add({
  name: "sum all but channel, split rows",
  inputs: [f([2, 5, 3, 40, 41])],
  py: "torch.sum(a, (0, 2, 3, 4))",
  ts: (a) => F.sum(a, [0, 2, 3, 4]),
  rtol: 3e-4,
  big: true,
});
add({
  name: "sum i32 all but axis 1",
  inputs: [{ shape: [3, 4, 6], dtype: "i32", lo: -100, hi: 100, ints: true }],
  py: "torch.sum(a, (0, 2)).int()",
  ts: (a) => F.sum(a, [0, 2]),
});
add({
  name: "sum i32",
  inputs: [{ shape: [4, 6], dtype: "i32", lo: -100, hi: 100, ints: true }],
  py: "torch.sum(a, 1).int()",
  ts: (a) => F.sum(a, 1),
});
add({ name: "mean all", inputs: [f([3, 5, 7])], py: "torch.mean(a)", ts: (a) => F.mean(a) });
add({
  name: "mean axes 0,2",
  inputs: [f([3, 5, 7])],
  py: "torch.mean(a, (0, 2))",
  ts: (a) => F.mean(a, [0, 2]),
});
add({
  name: "max axis 1 ties",
  inputs: [f([3, 5, 7], { ints: true })],
  py: "torch.amax(a, 1)",
  ts: (a) => F.max(a, 1),
});
add({ name: "max all", inputs: [f([3, 5, 7])], py: "torch.amax(a)", ts: (a) => F.max(a) });
add({
  name: "max long rows keep",
  inputs: [f([4, 700])],
  py: "torch.amax(a, 1, keepdim=True)",
  ts: (a) => F.max(a, 1, true),
});
add({
  name: "min axes 0,2 ties",
  inputs: [f([3, 5, 7], { ints: true })],
  py: "torch.amin(a, (0, 2))",
  ts: (a) => F.min(a, [0, 2]),
});
add({
  name: "argmax axis 1",
  inputs: [f([3, 5, 7], { ints: true, grad: false })],
  py: "torch.argmax(a, 1).int()",
  ts: (a) => F.argmax(a, 1),
});
add({
  name: "argmax axis -1 long",
  inputs: [f([3, 1000], { grad: false })],
  py: "torch.argmax(a, -1).int()",
  ts: (a) => F.argmax(a, -1),
});
add({
  name: "argmax flat",
  inputs: [f([6, 7], { grad: false })],
  py: "torch.argmax(a).int()",
  ts: (a) => F.argmax(a),
});

// Softmax.
add({
  name: "softmax last (I=1)",
  inputs: [f([4, 70], { lo: -5, hi: 5 })],
  py: "torch.softmax(a, -1)",
  ts: (a) => F.softmax(a, -1),
});
add({
  name: "softmax dim 1 (I>1)",
  inputs: [f([2, 5, 3], { lo: -5, hi: 5 })],
  py: "torch.softmax(a, 1)",
  ts: (a) => F.softmax(a, 1),
});
add({
  name: "logSoftmax last",
  inputs: [f([3, 9], { lo: -30, hi: 30 })],
  py: "torch.log_softmax(a, -1)",
  ts: (a) => F.logSoftmax(a, -1),
});
add({
  name: "logSoftmax dim 0",
  inputs: [f([6, 4], { lo: -5, hi: 5 })],
  py: "torch.log_softmax(a, 0)",
  ts: (a) => F.logSoftmax(a, 0),
});

// Permute / transpose / reshape.
add({
  name: "permute 0,2,3,1",
  inputs: [f([2, 3, 4, 5])],
  py: "a.permute(0, 2, 3, 1)",
  ts: (a) => F.permute(a, [0, 2, 3, 1]),
});
add({
  name: "permute 3,1,0,2",
  inputs: [f([2, 3, 4, 5])],
  py: "a.permute(3, 1, 0, 2)",
  ts: (a) => F.permute(a, [3, 1, 0, 2]),
});
add({
  name: "transpose -1,-2",
  inputs: [f([3, 7, 5])],
  py: "a.transpose(-1, -2)",
  ts: (a) => F.transpose(a, -1, -2),
});
add({
  name: "reshape + exp",
  inputs: [f([3, 8])],
  py: "torch.exp(a.reshape(4, 6))",
  ts: (a) => F.exp(a.reshape([4, -1])),
});

// Matmul.
add({ name: "matmul 5x7 @ 7x3", inputs: [f([5, 7]), f([7, 3])], py: "a @ b", ts: (a, b) => F.matmul(a, b) });
add({
  name: "matmul 67x33 @ 33x70",
  inputs: [f([67, 33]), f([33, 70])],
  py: "a @ b",
  ts: (a, b) => F.matmul(a, b),
  big: true,
});
add({
  name: "matmul 65x3 @ 3x65",
  inputs: [f([65, 3]), f([3, 65])],
  py: "a @ b",
  ts: (a, b) => F.matmul(a, b),
});
add({
  name: "matmul batch bcast",
  inputs: [f([2, 1, 5, 19]), f([3, 19, 6])],
  py: "a @ b",
  ts: (a, b) => F.matmul(a, b),
});
add({
  name: "matmul transA",
  inputs: [f([2, 17, 9]), f([2, 17, 5])],
  py: "a.transpose(-1, -2) @ b",
  ts: (a, b) => F.matmul(a, b, { transA: true }),
});
add({
  name: "matmul transB",
  inputs: [f([9, 17]), f([2, 5, 17])],
  py: "a @ b.transpose(-1, -2)",
  ts: (a, b) => F.matmul(a, b, { transB: true }),
});
add({
  name: "matmul transA transB",
  inputs: [f([3, 17, 9]), f([5, 17])],
  py: "a.transpose(-1, -2) @ b.transpose(-1, -2)",
  ts: (a, b) => F.matmul(a, b, { transA: true, transB: true }),
});
add({ name: "matmul vec @ mat", inputs: [f([7]), f([2, 7, 3])], py: "a @ b", ts: (a, b) => F.matmul(a, b) });
add({ name: "matmul mat @ vec", inputs: [f([4, 7]), f([7])], py: "a @ b", ts: (a, b) => F.matmul(a, b) });
add({ name: "matmul vec @ vec", inputs: [f([7]), f([7])], py: "a @ b", ts: (a, b) => F.matmul(a, b) });

// A composite, to exercise accumulation of gradients from several uses of one tensor.
add({
  name: "composite",
  inputs: [f([4, 6]), f([6, 5]), f([5])],
  py: "torch.log_softmax(torch.tanh(a @ b + c) * a.sum(1, keepdim=True), -1) - torch.sigmoid(a).mean()",
  ts: (a, b, c) =>
    F.sub(F.logSoftmax(F.mul(F.tanh(F.add(F.matmul(a, b), c)), F.sum(a, 1, true)), -1), F.mean(F.sigmoid(a))),
});

const suite = new CaseSuite(cases, 1234);

Deno.test("ops match PyTorch (forward and backward)", async (t) => {
  const device = await openDevice();
  try {
    await suite.check(t, device);
  } finally {
    device.destroy();
  }
});

Deno.test("reductions on the cpu profile with tensors split across bindings (vec4 lanes over windows)", async (t) => {
  // 8 KiB bindings: the lanes' vec4 loads of long rows cross windows; the big cases (the split rows) fit the
  // device's bindings at this size.
  const device = await openDevice({ maxBindingBytes: 8192, profile: "cpu" });
  try {
    await suite.check(t, device, false, (name) => /^(sum|mean|max|min)\b/.test(name));
  } finally {
    device.destroy();
  }
});

Deno.test("ops match PyTorch with tensors split across bindings and 2-D dispatch grids", async (t) => {
  // 1 KiB bindings: any tensor over 256 floats is bound as several windows; at most 8 workgroups per
  // dimension: nearly every dispatch uses a 2-D grid.
  // The "gpu" profile also covers the workgroup-memory kernels on a software adapter.
  const device = await openDevice({ maxBindingBytes: 1024, maxWorkgroupsPerDim: 8, profile: "gpu" });
  try {
    await suite.check(t, device, true);
  } finally {
    device.destroy();
  }
});

Deno.test("elementwise ops split into chunks when operands need more bindings than the device allows", async () => {
  // 256-byte windows: a 3000-element operand needs 47 bindings, over the limit of 32 on its own.
  const device = await openDevice({ maxBindingBytes: 256 });
  try {
    const rng = prng(5);
    const a = randData(rng, 3000), b = randData(rng, 100), c = randData(rng, 3000);
    const ref = await torchRef([
      {
        expr: "torch.where(a > 0, b, c) * 2 + b",
        inputs: [{ data: a, shape: [30, 100], dtype: "f32" }, { data: b, shape: [100], dtype: "f32" }, {
          data: c,
          shape: [30, 100],
          dtype: "f32",
        }],
      },
      {
        expr: "(a > b)",
        inputs: [{ data: a, shape: [30, 100], dtype: "f32" }, { data: b, shape: [100], dtype: "f32" }],
      },
    ]);
    await tidy(async () => {
      const ta = tensor(a, [30, 100], { device }),
        tb = tensor(b, [100], { device }),
        tc = tensor(c, [30, 100], { device });
      const y = F.add(F.mul(F.where(F.gt(ta, 0), tb, tc), 2), tb);
      assertClose(await y.toArray(), ref[0].out.data, "where/mul/add chunked");
      assertClose(await F.gt(ta, tb).toArray(), ref[1].out.data, "gt chunked (u8 output)", 0, 0);
    });
  } finally {
    device.destroy();
  }
});
