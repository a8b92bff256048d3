/**
 * Folding eval-mode batch norms into their convs (nn/fusion.ts, `models.fuseConvBn`): the folded weights
 * against torch.nn.utils.fusion.fuse_conv_bn_weights (rtol 1e-6), and tiny CSN models (classifier and
 * UNet, random norm statistics and affine parameters) whose folded eval outputs equal the unfolded ones
 * (rtol 1e-4 of the largest output) on both kernel profiles, f32 and under autocast (within the f16 bound
 * of amp_test.ts); the state dict's keys change as PyTorch's fusion changes them; folding needs eval mode.
 * And the training-side fusion: a pointwise conv's output moments from its GEMM epilogue feeding a batch
 * norm equal the norm's own (rtol 1e-5), and a CSN bottleneck trains alike on both kernel profiles (1e-4).
 */
import { autocast, F, models, nn, openDevice, type Tensor, tensor, tidy } from "../mod.ts";
import type { Device } from "../core/device.ts";
import { assertClose, assertThrows, prng, randData, relErr, torchRef } from "./helpers.ts";

Deno.test("fuseConvBnWeights matches torch.nn.utils.fusion.fuse_conv_bn_weights", async () => {
  const device = await openDevice();
  const rng = prng(11);
  const O = 7;
  const w = randData(rng, O * 5 * 1 * 3 * 3, -1, 1), cb = randData(rng, O, -1, 1);
  const rm = randData(rng, O, -1, 1), rv = randData(rng, O, 0.1, 3);
  const g = randData(rng, O, 0.5, 1.5), b = randData(rng, O, -1, 1);
  const inp = (data: number[], shape: number[]) => ({ data, shape, dtype: "f32" as const });
  const ins = [inp(w, [O, 5, 1, 3, 3]), inp(cb, [O]), inp(rm, [O]), inp(rv, [O]), inp(g, [O]), inp(b, [O])];
  const fuse = "torch.nn.utils.fusion.fuse_conv_bn_weights";
  const refs = await torchRef([
    { expr: `${fuse}(a, b, c, d, 1e-3, e, f)[0]`, inputs: ins },
    { expr: `${fuse}(a, b, c, d, 1e-3, e, f)[1]`, inputs: ins },
    { expr: `${fuse}(a, None, c, d, 1e-3, None, None)[1]`, inputs: ins },
  ]);
  try {
    const t = (d: number[], s: number[]) => tensor(d, s, { device });
    const [fw, fb, fb0] = await tidy(async () => {
      const r = nn.fuseConvBnWeights(
        t(w, [O, 5, 1, 3, 3]),
        t(cb, [O]),
        t(rm, [O]),
        t(rv, [O]),
        1e-3,
        t(g, [O]),
        t(b, [O]),
      );
      const plain = nn.fuseConvBnWeights(
        t(w, [O, 5, 1, 3, 3]),
        null,
        t(rm, [O]),
        t(rv, [O]),
        1e-3,
        null,
        null,
      );
      return [await r.weight.toArray(), await r.bias.toArray(), await plain.bias.toArray()];
    });
    assertClose(fw, refs[0].out.data, "fused weight", 1e-6, 1e-7);
    assertClose(fb, refs[1].out.data, "fused bias", 1e-6, 1e-7);
    assertClose(fb0, refs[2].out.data, "fused bias without conv bias or affine", 1e-6, 1e-7);
    assertThrows(
      () =>
        nn.fuseConvBnWeights(
          t(w, [O, 5, 1, 3, 3]),
          null,
          t(rm.slice(1), [O - 1]),
          t(rv, [O]),
          1e-3,
          null,
          null,
        ),
      "runningMean must be f32 [7]",
    );
  } finally {
    device.destroy();
  }
});

/** Random running statistics and affine parameters for every batch norm (fresh ones are an identity). */
function randomNorms(m: nn.Module, seed: number): void {
  const rng = prng(seed);
  for (const [, b] of m.namedModules()) {
    if (!(b instanceof nn.BatchNorm3d)) continue;
    const C = b.numFeatures, device = b.runningMean.device;
    const set = (t: Tensor | null, lo: number, hi: number) => {
      if (!t) return;
      const v = tensor(randData(rng, C, lo, hi), [C], { device });
      t.assign(v);
      v.dispose();
    };
    set(b.runningMean, -0.3, 0.3);
    set(b.runningVar, 0.5, 2);
    set(b.weight, 0.5, 1.5);
    set(b.bias, -0.3, 0.3);
  }
}

async function foldedEqualsUnfolded(device: Device, kind: "classifier" | "unet"): Promise<void> {
  nn.seedInit(5);
  const m: nn.Module = kind === "unet"
    ? new models.CSNUNet({ device, encoder: "r26ir", baseChannels: 8, numClasses: 4 })
    : new models.CSNClassifier({ device, encoder: "r26ip", baseChannels: 8, numClasses: 3, dropout: 0 });
  try {
    randomNorms(m, 3);
    const shape = kind === "unet" ? [1, 1, 8, 32, 32] : [2, 3, 8, 16, 16];
    const xs = randData(prng(8), shape.reduce((p, d) => p * d, 1), -1, 1);
    const run = () => tidy(() => m.forward(tensor(xs, shape, { device })).toArray());
    assertThrows(() => models.fuseConvBn(m), "eval mode");
    m.eval();
    const before = await run();
    const norms = m.namedModules().filter(([, c]) => c instanceof nn.BatchNorm3d).length;
    const n = models.fuseConvBn(m);
    if (n !== norms || n < 20) throw new Error(`${kind}: folded ${n} of ${norms} norms`);
    const keys = Object.keys(m.stateDict());
    if (keys.some((k) => k.includes(".bn."))) throw new Error(`${kind}: a norm is left in the state dict`);
    if (
      !keys.includes("backbone.layer1.0.conv3.conv.bias") &&
      !keys.includes("backbone.layer1.0.conv3.conv.bias")
    ) {
      throw new Error(`${kind}: no folded conv bias among ${keys.slice(0, 8)}...`);
    }
    if (models.fuseConvBn(m) !== 0) throw new Error(`${kind}: folding twice folded again`);
    const after = await run();
    const e = relErr(after, before);
    console.log(
      `${kind} (${device.profile}): folded vs unfolded, max |diff| / max |y| = ${e.toExponential(2)}`,
    );
    assertClose(
      after,
      before,
      `${kind} folded vs unfolded (${device.profile})`,
      1e-4,
      1e-4 * Math.max(...Array.from(before, Math.abs)),
    );
    const half = await autocast(() => run());
    const eh = relErr(half, before);
    console.log(
      `${kind} (${device.profile}): folded under autocast vs unfolded f32 = ${eh.toExponential(2)}`,
    );
    if (!(eh > 0 && eh < 2e-3)) throw new Error(`${kind}: folded autocast error ${eh} outside (0, 2e-3)`);
  } finally {
    m.dispose();
  }
}

for (const profile of ["cpu", "gpu"] as const) {
  Deno.test(`folded CSN classifier and UNet equal the unfolded ones in eval mode (${profile} profile)`, async () => {
    const device = await openDevice({ profile, label: profile });
    try {
      await foldedEqualsUnfolded(device, "classifier");
      await foldedEqualsUnfolded(device, "unet");
    } finally {
      device.destroy();
    }
  });
}

Deno.test("a folded ConvModule's conv trains on (no norm left); F.conv3d residual errors are clear", async () => {
  const device = await openDevice();
  try {
    const cm = new models.ConvModule(4, 6, 1, { device, act: false });
    cm.eval();
    cm.fuseConvBn();
    cm.train();
    if (cm.bn !== null || !cm.conv.bias?.requiresGrad) throw new Error("folded module lost its conv bias");
    const x = tensor(randData(prng(2), 4 * 27, -1, 1), [1, 4, 3, 3, 3], { device });
    F.sum(cm.forward(x)).backward();
    if (!cm.conv.weight.grad || !cm.conv.bias.grad) throw new Error("no gradients for the folded conv");
    assertThrows(
      () => F.conv3d(x, cm.conv.weight, null, { residual: tensor([1, 2], [2], { device }) }),
      "residual must be f32 or f16 of the output's shape [1,6,3,3,3]",
    );
    x.dispose();
    cm.dispose();
  } finally {
    device.destroy();
  }
});

/**
 * A pointwise conv's output moments from the GEMM's epilogue (gpu profile, vec4 tiles) feeding a
 * training-mode batch norm: output, saved statistics and running statistics equal the norm's own two-pass
 * moments; the 64, 64 x 128 and 128 tiles with ragged channels and positions, far-from-zero means, an f16 output.
 */
Deno.test("batch norm from a pointwise conv's epilogue moments equals its own moments (gpu profile)", async () => {
  const device = await openDevice({ profile: "gpu", label: "gpu-profile" });
  const rng = prng(17);
  const cases = [
    { name: "64 tile, ragged", x: [2, 12, 3, 5, 12], O: 70, offset: 0, f16: false },
    { name: "128 tile, ragged", x: [1, 8, 4, 11, 12], O: 520, offset: 0, f16: false },
    { name: "mean 300 x std", x: [2, 8, 2, 6, 6], O: 20, offset: 30, f16: false },
    { name: "f16 output", x: [2, 8, 3, 4, 8], O: 36, offset: 0, f16: true },
    // K = 256 channels and 2 x 8460 positions: gemmTile's 64 x 128 tile (ragged columns).
    { name: "64 x 128 tile", x: [2, 256, 4, 47, 45], O: 68, offset: 0, f16: false },
  ];
  try {
    for (const c of cases) {
      const C = c.x[1], nx = c.x.reduce((p, d) => p * d, 1);
      const xs = randData(rng, nx, -1, 1).map((v) => v + c.offset);
      const ws = randData(rng, c.O * C, -0.5, 0.5);
      const gs = randData(rng, c.O, 0.5, 1.5), bs = randData(rng, c.O, -0.5, 0.5);
      const run = async (useMoments: boolean) =>
        await tidy(async () => {
          const x = tensor(xs, c.x, { device }), w = tensor(ws, [c.O, C, 1, 1, 1], { device });
          const hold = useMoments ? { part: null as Tensor | null } : null;
          const y = F.conv3d(x, w, null, { moments: hold, dtype: c.f16 ? "f16" : "f32" });
          if (useMoments && !hold!.part) throw new Error(`${c.name}: the GEMM gave no moments`);
          const rm = tensor(new Array(c.O).fill(0.5), [c.O], { device });
          const rv = tensor(new Array(c.O).fill(2), [c.O], { device });
          const out = F.batchNorm3d(y, tensor(gs, [c.O], { device }), tensor(bs, [c.O], { device }), rm, rv, {
            training: true,
            relu: true,
            moments: hold?.part ?? null,
            dtype: "f32",
          });
          return [await out.toArray(), await rm.toArray(), await rv.toArray()];
        });
      const [y0, rm0, rv0] = await run(false), [y1, rm1, rv1] = await run(true);
      assertClose(y1, y0, `${c.name}: output`, 1e-5, 1e-5);
      assertClose(rm1, rm0, `${c.name}: running mean`, 1e-5, 1e-6);
      assertClose(rv1, rv0, `${c.name}: running var`, 1e-5, 1e-6);
    }
    // Where the GEMM cannot (channels not a multiple of 4: the scalar tiles), no moments, the norm's own pass.
    await tidy(() => {
      const hold = { part: null as Tensor | null };
      F.conv3d(
        tensor(randData(rng, 2 * 7 * 9, -1, 1), [2, 7, 1, 3, 3], { device }),
        tensor(randData(rng, 35, -1, 1), [5, 7, 1, 1, 1], { device }),
        null,
        { moments: hold },
      );
      if (hold.part) throw new Error("moments from a GEMM that cannot give them");
    });
  } finally {
    device.destroy();
  }
});

Deno.test("a CSN bottleneck trains alike on both profiles (the gpu profile's conv-epilogue moments)", async () => {
  const out: number[][][] = [];
  for (const profile of ["cpu", "gpu"] as const) {
    const device = await openDevice({ profile, label: profile });
    try {
      nn.seedInit(9);
      const blk = new models.CSNBottleneck(16, 8, [1, 1, 1], "ir", true, device);
      blk.train();
      const xs = randData(prng(4), 2 * 16 * 4 * 8 * 8, -1, 1);
      out.push(
        await tidy(async () => {
          const x = tensor(xs, [2, 16, 4, 8, 8], { device, requiresGrad: true });
          const y = blk.forward(x);
          F.sum(F.mul(y, y)).backward();
          const bn = blk.conv1.bn!;
          return [
            Array.from(await y.toArray()),
            Array.from(await x.grad!.toArray()),
            Array.from(await blk.conv1.conv.weight.grad!.toArray()),
            Array.from(await bn.runningVar.toArray()),
          ];
        }),
      );
      blk.dispose();
    } finally {
      device.destroy();
    }
  }
  const what = ["output", "input gradient", "conv1 weight gradient", "conv1 norm running var"];
  out[0].forEach((v, i) => assertClose(out[1][i], v, `bottleneck ${what[i]}, gpu vs cpu profile`, 1e-4));
});
