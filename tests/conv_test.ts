/**
 * F.conv3d and F.conv2p1d against torch.nn.functional.conv3d, forward and the gradients of input, weight and
 * bias (rtol 1e-4): depthwise, pointwise, the CSN stem, (2+1)D, grouped, dilated, odd sizes, batch 3, the
 * fused ReLU on each algorithm, and again with every tensor split across bindings. Plus the error messages of bad calls.
 */
import { F, openDevice, type Tensor, zeros } from "../mod.ts";
import { type Case, CaseSuite, f } from "./cases.ts";
import { gatherLayout, gatherTile } from "../kernels/conv/implicit.ts";

const cases: Case[] = [];
const conv = (
  name: string,
  x: number[],
  w: number[],
  bias: boolean,
  o: { stride?: number[]; padding?: number[]; dilation?: number[]; groups?: number; relu?: boolean },
  extra: Partial<Case> = {},
) => {
  const call = `F.conv3d(a, b, ${bias ? "c" : "None"}, stride=${
    JSON.stringify(o.stride ?? [1, 1, 1])
  }, padding=${JSON.stringify(o.padding ?? [0, 0, 0])}, dilation=${
    JSON.stringify(o.dilation ?? [1, 1, 1])
  }, groups=${o.groups ?? 1})`;
  const py = o.relu ? `torch.relu(${call})` : call;
  const opts = {
    stride: o.stride as [number, number, number] | undefined,
    padding: o.padding as [number, number, number] | undefined,
    dilation: o.dilation as [number, number, number] | undefined,
    groups: o.groups,
    relu: o.relu,
  };
  cases.push({
    name,
    inputs: bias ? [f(x), f(w, { lo: -0.5, hi: 0.5 }), f([w[0]])] : [f(x), f(w, { lo: -0.5, hi: 0.5 })],
    py,
    ts: (a: Tensor, b: Tensor, c?: Tensor) => F.conv3d(a, b, c ?? null, opts),
    ...extra,
  });
};

conv("depthwise 3x3x3 s1 p1", [2, 4, 5, 7, 9], [4, 1, 3, 3, 3], false, { padding: [1, 1, 1], groups: 4 });
conv("depthwise 3x3x3 s2 p1", [2, 4, 5, 7, 9], [4, 1, 3, 3, 3], false, {
  stride: [2, 2, 2],
  padding: [1, 1, 1],
  groups: 4,
});
conv("depthwise 3x3x3 temporal stride 2", [1, 3, 6, 5, 5], [3, 1, 3, 3, 3], false, {
  stride: [2, 1, 1],
  padding: [1, 1, 1],
  groups: 3,
});
conv("pointwise s1", [3, 5, 3, 4, 5], [6, 5, 1, 1, 1], false, {});
conv("pointwise s2 + bias", [2, 5, 5, 7, 9], [6, 5, 1, 1, 1], true, { stride: [2, 2, 2] });
// Rows of whole vec4s: the strided input gradient's scatter a vec4 a lane (W strides 2, 4 and 1).
conv("pointwise s2, rows of 8", [2, 5, 5, 6, 8], [6, 5, 1, 1, 1], false, { stride: [2, 2, 2] });
conv("pointwise s(1,2,4) + bias, rows of 8", [1, 3, 2, 3, 8], [4, 3, 1, 1, 1], true, { stride: [1, 2, 4] });
conv("pointwise s(2,1,1), rows of 4", [1, 3, 5, 3, 4], [2, 3, 1, 1, 1], false, { stride: [2, 1, 1] });
conv("pointwise 12 -> 10 channels (ROWS tail)", [1, 12, 2, 3, 5], [10, 12, 1, 1, 1], true, {});
conv("stem 3x7x7 s(1,2,2) p(1,3,3)", [2, 3, 4, 13, 11], [4, 3, 3, 7, 7], false, {
  stride: [1, 2, 2],
  padding: [1, 3, 3],
});
conv("(1,3,3) p(0,1,1) + bias", [2, 6, 3, 5, 7], [5, 6, 1, 3, 3], true, { padding: [0, 1, 1] });
conv("(3,1,1) p(1,0,0) + bias", [2, 6, 5, 4, 3], [5, 6, 3, 1, 1], true, { padding: [1, 0, 0] });
conv("full 3x3x3 + bias (decoder last)", [1, 5, 4, 6, 5], [3, 5, 3, 3, 3], true, { padding: [1, 1, 1] });
conv("groups 2", [2, 4, 4, 5, 6], [6, 2, 3, 3, 3], true, { padding: [1, 1, 1], groups: 2 });
conv("dilation 2", [1, 3, 7, 8, 9], [4, 3, 3, 3, 3], false, { padding: [2, 2, 2], dilation: [2, 2, 2] });
conv("odd 5x7x9 batch 3, stride (2,1,2), pad (0,1,2)", [3, 2, 5, 7, 9], [3, 2, 3, 2, 3], true, {
  stride: [2, 1, 2],
  padding: [0, 1, 2],
});
conv("depthwise + bias, dilation 2", [2, 5, 6, 7, 8], [5, 1, 3, 3, 3], true, {
  padding: [2, 2, 2],
  dilation: [2, 2, 2],
  groups: 5,
});
conv("depthwise 3x3x3 s(1,2,2), no pad", [2, 3, 5, 9, 8], [3, 1, 3, 3, 3], true, {
  stride: [1, 2, 2],
  groups: 3,
});
conv("depthwise 17 channels batch 3", [3, 17, 3, 5, 4], [17, 1, 3, 3, 3], false, {
  padding: [1, 1, 1],
  groups: 17,
});
// Output rows a multiple of 4 wide: the "cpu" profile's im2col builds 4 columns per invocation.
conv("(1,3,3) rows of 8 + bias", [2, 5, 3, 5, 8], [4, 5, 1, 3, 3], true, { padding: [0, 1, 1] });
conv("3x3x3 s2 p1, rows of 4", [1, 3, 5, 9, 8], [5, 3, 3, 3, 3], false, {
  stride: [2, 2, 2],
  padding: [1, 1, 1],
});
// The "cpu" profile's quads (direct4.ts: stride 1, rows of whole vec4s): 8 positions a lane (rows of 8, 16) or 4
// (rows of 4, 12), ragged row tiles (6, 9 channels of 8-row blocks), a 5-wide kernel with padding 2, a row
// shrunk by its kernel (12 -> 8), 3x1x1 over whole planes (W of 3 and 2), and weight gradients in segments.
conv("quads: 3x3x3 + bias + relu, rows of 4", [2, 5, 4, 5, 4], [6, 5, 3, 3, 3], true, {
  padding: [1, 1, 1],
  relu: true,
});
conv("quads: 3x3x3, 9 output channels, rows of 8", [1, 3, 3, 4, 8], [9, 3, 3, 3, 3], true, {
  padding: [1, 1, 1],
});
conv("quads: (1,3,5) p(0,1,2), rows of 12", [1, 4, 2, 3, 12], [5, 4, 1, 3, 5], false, { padding: [0, 1, 2] });
conv("quads: (1,1,5) unpadded, rows of 12 -> 8", [1, 3, 2, 3, 12], [4, 3, 1, 1, 5], true, {});
conv("quads: (3,1,1) over planes of 4x3", [2, 6, 5, 4, 3], [7, 6, 3, 1, 1], true, { padding: [1, 0, 0] });
conv("quads: (3,1,1) + relu over planes of 2x2", [2, 9, 4, 2, 2], [5, 9, 3, 1, 1], true, {
  padding: [1, 0, 0],
  relu: true,
});
conv("quads: stem 3x7x7 s(1,2,2) p(1,3,3), rows of 16 -> 8", [2, 3, 4, 12, 16], [5, 3, 3, 7, 7], false, {
  stride: [1, 2, 2],
  padding: [1, 3, 3],
});
conv("quads: 3x3x3 s2 p1 + bias, rows of 16 -> 8", [1, 3, 6, 8, 16], [5, 3, 3, 3, 3], true, {
  stride: [2, 2, 2],
  padding: [1, 1, 1],
});
conv("quads: 3x3x3 weight gradient in segments", [2, 4, 8, 16, 16], [5, 4, 3, 3, 3], true, {
  padding: [1, 1, 1],
}, { big: true });
// The "cpu" profile's planes of 4 positions (plane.ts: 2 x 2 and 4 x 1, stride 1): ragged row tiles (6, 9
// channels in tiles of 4), planes per lane across samples (3 and 9 planes in groups of up to 4), a 3x3x3
// reaching planes along D, bias and ReLU.
conv("plane: 1x3x3 + bias + relu over 2x2, 7 -> 6 channels", [1, 7, 3, 2, 2], [6, 7, 1, 3, 3], true, {
  padding: [0, 1, 1],
  relu: true,
});
conv("plane: 3x3x3 p1 over 2x2, batch 3", [3, 5, 3, 2, 2], [9, 5, 3, 3, 3], false, { padding: [1, 1, 1] });
conv("plane: (1,3,1) + bias over 4x1", [2, 4, 2, 4, 1], [5, 4, 1, 3, 1], true, { padding: [0, 1, 0] });
// 130 output (then input) channels: the gpu profile's implicit GEMMs take their 128 x 128 tile, with ragged
// rows and more than 64 columns (84 positions, 72 weight columns; 72 input positions).
// (Marked big: the windowed suite's shaders for that tile take lavapipe minutes to compile; the gpu-profile
// test below runs them unwindowed.)
conv(
  "(1,3,3) + bias, 130 output channels",
  [1, 8, 2, 6, 7],
  [130, 8, 1, 3, 3],
  true,
  { padding: [0, 1, 1] },
  {
    big: true,
  },
);
conv("(3,1,1), 130 input channels", [1, 130, 3, 4, 6], [5, 130, 3, 1, 1], false, { padding: [1, 0, 0] }, {
  big: true,
});
// The gpu profile's flat tiles for narrow outputs: 40 output channels take the 64 x 128 tile (5 ragged column
// tiles; the input gradient's 6 rows the 32 x 256 one; the weight gradient's 576 positions split in two), 24
// output channels the 32 x 256 tile (2 column tiles; the input gradient's 48 rows the 64 x 128 one).
conv("(1,3,3) + bias, 40 output channels: 64 x 128 tile", [1, 6, 4, 12, 12], [40, 6, 1, 3, 3], true, {
  padding: [0, 1, 1],
}, { big: true });
conv("3x3x3 48 -> 24 channels: 32 x 256 tile", [1, 48, 3, 9, 10], [24, 48, 3, 3, 3], false, {
  padding: [1, 1, 1],
}, { big: true });
// The fused ReLU (`relu: true`) on every algorithm: its gradient mask, and the bias gradient summed in the
// same pass (rows of 6400 positions: split into segments).
conv("pointwise + bias + relu, long rows", [2, 3, 4, 40, 40], [4, 3, 1, 1, 1], true, { relu: true }, {
  big: true,
});
conv("pointwise + relu, no bias", [2, 5, 3, 4, 5], [6, 5, 1, 1, 1], false, { relu: true });
conv("depthwise + bias + relu", [2, 4, 5, 7, 9], [4, 1, 3, 3, 3], true, {
  padding: [1, 1, 1],
  groups: 4,
  relu: true,
});
// Rows of whole vec4s at stride 1: the cpu profile's depthwise quads (8 and 4 outputs a lane), forward and the
// input gradient (the flipped kernel) both; a 3x1x3 kernel padded (1, 0, 1) for uneven taps.
conv("depthwise quads 3x3x3 + bias + relu, rows of 16", [2, 3, 4, 5, 16], [3, 1, 3, 3, 3], true, {
  padding: [1, 1, 1],
  groups: 3,
  relu: true,
});
conv("depthwise quads 3x1x3 p(1,0,1), rows of 8 and 4", [1, 2, 3, 6, 8], [2, 1, 3, 1, 3], false, {
  padding: [1, 0, 1],
  groups: 2,
});
conv("depthwise quads 1x3x3 p(0,1,1), rows of 4", [2, 2, 2, 3, 4], [2, 1, 1, 3, 3], true, {
  padding: [0, 1, 1],
  groups: 2,
});
conv("(1,3,3) p(0,1,1) + bias + relu", [2, 6, 3, 5, 7], [5, 6, 1, 3, 3], true, {
  padding: [0, 1, 1],
  relu: true,
});
conv("stem 3x7x7 + relu, no bias", [1, 3, 4, 13, 11], [4, 3, 3, 7, 7], false, {
  stride: [1, 2, 2],
  padding: [1, 3, 3],
  relu: true,
});
conv("groups 2 + bias + relu", [2, 4, 4, 5, 6], [6, 2, 3, 3, 3], true, {
  padding: [1, 1, 1],
  groups: 2,
  relu: true,
});

// The fused shortcut (`residual`): the pointwise GEMMs add it as they store (every GEMM kernel: the
// lanes kernel, the vec4 and scalar tiles, and after a K split's sum), other algorithms in a pass after.
const residual = (
  name: string,
  x: number[],
  w: number[],
  out: number[],
  o: { bias?: boolean; relu?: boolean; padding?: number[]; groups?: number } = {},
) => {
  const call = `F.conv3d(a, b, ${o.bias ? "c" : "None"}, padding=${
    JSON.stringify(o.padding ?? [0, 0, 0])
  }, groups=${o.groups ?? 1}) + ${o.bias ? "d" : "c"}`;
  cases.push({
    name,
    inputs: [f(x), f(w, { lo: -0.5, hi: 0.5 }), ...(o.bias ? [f([w[0]])] : []), f(out)],
    py: o.relu ? `torch.relu(${call})` : call,
    ts: (...t: Tensor[]) =>
      F.conv3d(t[0], t[1], o.bias ? t[2] : null, {
        padding: o.padding as [number, number, number] | undefined,
        groups: o.groups,
        relu: o.relu,
        residual: t[t.length - 1],
      }),
  });
};
residual("pointwise + bias + residual + relu", [2, 5, 3, 4, 5], [6, 5, 1, 1, 1], [2, 6, 3, 4, 5], {
  bias: true,
  relu: true,
});
residual("pointwise + residual, vec4 tiles", [2, 8, 2, 4, 4], [12, 8, 1, 1, 1], [2, 12, 2, 4, 4]);
residual(
  "pointwise + bias + residual + relu, K split",
  [1, 520, 1, 2, 3],
  [5, 520, 1, 1, 1],
  [1, 5, 1, 2, 3],
  {
    bias: true,
    relu: true,
  },
);
residual("depthwise + bias + residual + relu", [2, 4, 3, 5, 6], [4, 1, 3, 3, 3], [2, 4, 3, 5, 6], {
  bias: true,
  relu: true,
  padding: [1, 1, 1],
  groups: 4,
});

// A pointwise conv whose input is also a shortcut: the shortcut's gradient, already accumulated when the
// conv's backward runs, is added by the input-gradient GEMM as it stores (autograd's `pending`).
cases.push({
  name: "pointwise, input also a shortcut (gradient accumulated in the GEMM)",
  inputs: [f([2, 8, 3, 4, 4]), f([8, 8, 1, 1, 1], { lo: -0.5, hi: 0.5 })],
  py: "F.conv3d(torch.relu(a), b) + torch.relu(a)",
  ts: (a: Tensor, b: Tensor) => {
    const h = F.relu(a);
    return F.add(F.conv3d(h, b), h);
  },
});

cases.push({
  name: "conv2p1d (1,3,3) -> ReLU -> (3,1,1) -> ReLU",
  inputs: [
    f([2, 4, 5, 6, 7]),
    f([6, 4, 1, 3, 3], { lo: -0.5, hi: 0.5 }),
    f([6]),
    f([3, 6, 3, 1, 1], { lo: -0.5, hi: 0.5 }),
    f([3]),
  ],
  py: "torch.relu(F.conv3d(torch.relu(F.conv3d(a, b, c, padding=(0, 1, 1))), d, e, padding=(1, 0, 0)))",
  ts: (x, ws, bs, wt, bt) => F.conv2p1d(x, ws, bs, wt, bt),
});

const suite = new CaseSuite(cases, 4321);

Deno.test("conv3d matches PyTorch (forward, grad input, grad weight, grad bias)", async (t) => {
  const device = await openDevice();
  try {
    await suite.check(t, device);
  } finally {
    device.destroy();
  }
});

Deno.test("conv3d matches PyTorch with tensors split across bindings", async (t) => {
  // 2 KiB windows: every activation above 512 floats is bound as several windows; 2-D dispatch grids; the
  // "gpu" kernel profile (workgroup-tiled GEMMs for the pointwise convs).
  const device = await openDevice({ maxBindingBytes: 2048, maxWorkgroupsPerDim: 8, profile: "gpu" });
  try {
    await suite.check(t, device, true);
  } finally {
    device.destroy();
  }
});

Deno.test("conv3d quads and planes on the cpu profile with tensors split across bindings", async (t) => {
  // direct4.ts, plane.ts and the depthwise quads read their source and write their output as vec4s: windows
  // of 128 vec4s; the pointwise convs' GEMMs (the lanes kernel's vec4 stores, the NT blocks) too. (The
  // 16-output depthwise quads compile for a minute with windows; the K split needs more than 64 workgroups.)
  const only = /^(quads|plane):|^depthwise quads .*rows of (8 and )?4$|^pointwise(?!.*K split)/;
  const device = await openDevice({ maxBindingBytes: 2048, maxWorkgroupsPerDim: 8, profile: "cpu" });
  try {
    await suite.check(t, device, true, (name) => only.test(name));
  } finally {
    device.destroy();
  }
});

Deno.test("conv3d on the gpu profile: implicit GEMMs with each tile, fused ReLU and residual", async (t) => {
  const device = await openDevice({ profile: "gpu", label: "gpu-profile" });
  try {
    await suite.check(t, device, false, (name) => /130|tile|relu|residual|shortcut/.test(name));
  } finally {
    device.destroy();
  }
});

Deno.test("conv3d on the gpu profile in WebGPU's guaranteed 16 KiB of workgroup memory", async (t) => {
  // What a browser's default device gets: the 64 x 128 tile for narrow outputs, no gather tables, no padding.
  const device = await openDevice({ profile: "gpu", maxWorkgroupStorage: 16384, label: "gpu-16k" });
  try {
    await suite.check(t, device, false, (name) => /130 output|tile|stem 3x7x7 s|dilation 2$|odd/.test(name));
  } finally {
    device.destroy();
  }
});

Deno.test("implicit-GEMM tiles fit WebGPU's guaranteed 16 KiB of workgroup memory where a device has no more", () => {
  for (const M of [1, 24, 32, 33, 64, 65, 130]) {
    for (const storage of [16384, 32768]) {
      const t = gatherTile(M, storage), bytes = 16 * 4 * (t.bm + t.bn);
      if (bytes > storage) {
        throw new Error(`M ${M}: the ${t.bm} x ${t.bn} tile stages ${bytes} bytes > ${storage}`);
      }
      if (t.ry * t.rx !== 256 || t.ry * t.tm !== t.bm || t.rx * t.tn !== t.bn) {
        throw new Error(`M ${M}: inconsistent tile ${JSON.stringify(t)}`);
      }
    }
  }
  // Tables and padding only where they fit; none at 16 KiB for the 128 x 128 tile.
  for (const M of [24, 40, 130]) {
    for (const by of ["column", "row"] as const) {
      for (const storage of [16384, 32768]) {
        const t = gatherTile(M, storage), l = gatherLayout(t, by, storage);
        const bytes = 64 * (t.bm + t.bn) + (l.table ? 16 * (by === "column" ? 16 : t.bn) : 0) +
          256 * (l.padA + l.padB);
        if (bytes > storage) throw new Error(`M ${M} ${by}: ${bytes} bytes > ${storage}`);
        if (storage === 32768 && !(l.table && l.padA === 1 && l.padB === (by === "row" ? 1 : 0))) {
          throw new Error(`M ${M} ${by}: no table or padding in 32 KiB`);
        }
      }
    }
  }
  if (gatherLayout(gatherTile(130), "column", 16384).table) throw new Error("128 x 128 table in 16 KiB");
  // The flat tile for narrow outputs where the memory allows it.
  if (gatherTile(24, 32768).bm !== 32 || gatherTile(24, 16384).bm !== 64) {
    throw new Error("32-row tile choice");
  }
});

Deno.test("conv3d rejects bad shapes with clear errors", async () => {
  const device = await openDevice();
  const expectErr = (fn: () => unknown, ...parts: string[]) => {
    try {
      fn();
    } catch (e) {
      const m = (e as Error).message;
      for (const p of parts) if (!m.includes(p)) throw new Error(`"${m}" lacks "${p}"`);
      return;
    }
    throw new Error(`no error (${parts.join(", ")})`);
  };
  try {
    const x = zeros([1, 4, 5, 5, 5], { device });
    expectErr(
      () => F.conv3d(zeros([4, 5, 5, 5], { device }), zeros([2, 4, 1, 1, 1], { device })),
      "F.conv3d",
      "5-D",
      "[4,5,5,5]",
    );
    expectErr(() => F.conv3d(x, zeros([2, 3, 1, 1, 1], { device })), "expects 3 input channels", "has 4");
    expectErr(
      () => F.conv3d(x, zeros([3, 2, 1, 1, 1], { device }), null, { groups: 3 }),
      "groups 3 does not divide the 4 input",
    );
    expectErr(
      () => F.conv3d(x, zeros([3, 2, 1, 1, 1], { device }), null, { groups: 2 }),
      "groups 2 does not divide the 3 output",
    );
    expectErr(
      () => F.conv3d(x, zeros([2, 4, 7, 1, 1], { device })),
      "kernel [7,1,1]",
      "larger than the padded input",
    );
    expectErr(
      () => F.conv3d(x, zeros([2, 4, 1, 1, 1], { device }), zeros([3], { device })),
      "bias must be [2]",
    );
    expectErr(() => F.conv3d(x, zeros([2, 4, 1, 1, 1], { device }), null, { stride: [1, 0, 1] }), "stride");
  } finally {
    device.destroy();
  }
});
