/**
 * Neural-network ops against PyTorch (forward and backward, rtol 1e-4): batch norm (train and eval),
 * pooling, upsampling, trilinear interpolation (and the argmax of resampled scores), cat/narrow, linear, the losses on random and saturated logits. Plus dropout's
 * statistics, BN running statistics over 3 steps, the modules' state dicts and ModuleList. The task's
 * losses (models.rsnaLoss, models.segLoss) are checked here with the ops they are built from.
 */
import { F, models, nn, noGrad, openDevice, type Tensor, tensor, tidy } from "../mod.ts";
import type { Device } from "../core/device.ts";
import { type Case, CaseSuite, f } from "./cases.ts";
import { assertClose, assertThrows, prng, randData, torchRef } from "./helpers.ts";

const cases: Case[] = [];
const add = (c: Case) => cases.push(c);
const bnW = { lo: 0.5, hi: 1.5 };

add({
  name: "batchNorm3d train, affine",
  inputs: [f([3, 4, 3, 5, 2]), f([4], bnW), f([4])],
  py: "F.batch_norm(a, torch.zeros(4), torch.ones(4), b, c, training=True, momentum=0.1, eps=1e-3)",
  ts: (x, w, b) => F.batchNorm3d(x, w, b, null, null, { training: true }),
});
add({
  name: "batchNorm3d train, no affine, batch 1",
  inputs: [f([1, 3, 4, 5, 6])],
  py: "F.batch_norm(a, None, None, training=True, eps=1e-3)",
  ts: (x) => F.batchNorm3d(x, null, null, null, null, { training: true }),
});
// Channels of more than 1024 values: several partials per channel (on the cpu profile a lane each, whose
// segments start mid-sample), as scalars (585 values per sample) and as vec4s (480).
for (const shape of [[3, 2, 5, 9, 13], [3, 3, 4, 10, 12]]) {
  const C = shape[1];
  add({
    name: `batchNorm3d train, segmented channels [${shape}]`,
    inputs: [f(shape, { lo: 2, hi: 5 }), f([C], bnW), f([C])],
    py: "F.batch_norm(a, torch.zeros(a.shape[1]), torch.ones(a.shape[1]), b, c, training=True, eps=1e-3)",
    ts: (x, w, b) => F.batchNorm3d(x, w, b, null, null, { training: true }),
    big: true,
  });
}
add({
  name: "batchNorm3d eval",
  inputs: [
    f([2, 4, 3, 3, 5]),
    f([4], bnW),
    f([4]),
    f([4], { grad: false }),
    f([4], { lo: 0.5, hi: 2, grad: false }),
  ],
  py: "F.batch_norm(a, d, e, b, c, training=False, eps=1e-3)",
  ts: (x, w, b, rm, rv) => F.batchNorm3d(x, w, b, rm, rv, { training: false }),
});
// A stem reading a one-channel image as the seed's three identical channels: the weights summed over them
// (nn.Conv3d's repeatedInput) against PyTorch's conv of the repeated image; odd sizes, the stem's stride.
add({
  name: "Conv3d repeatedInput (1 channel as 3) vs conv of the repeated input",
  inputs: [f([2, 1, 5, 10, 14], { grad: false }), f([5, 3, 3, 7, 7])],
  py: "F.conv3d(a.repeat(1, 3, 1, 1, 1), b, stride=(1, 2, 2), padding=(1, 3, 3))",
  ts: (x, w) =>
    new nn.Conv3d(3, 5, [3, 7, 7], {
      device: w.device,
      stride: [1, 2, 2],
      padding: [1, 3, 3],
      bias: false,
      weights: { weight: w, bias: null },
    }).convAct(x, { repeatedInput: true }),
});
// The fused forms a ResNet block uses: relu(bn(x)), relu(bn(x) + residual); odd sizes (scalar loads) and
// rows of a multiple of 4 (vec4 loads); a constant offset of 1000 checks the one-pass variance's accuracy.
add({
  name: "batchNorm3d train + relu, odd sizes",
  inputs: [f([2, 3, 3, 5, 3]), f([3], bnW), f([3])],
  py: "F.relu(F.batch_norm(a, None, None, b, c, training=True, eps=1e-3))",
  ts: (x, w, b) => F.batchNorm3d(x, w, b, null, null, { training: true, relu: true }),
});
add({
  name: "batchNorm3d train + residual + relu, vec4 rows",
  inputs: [f([2, 5, 2, 3, 4]), f([5], bnW), f([5]), f([2, 5, 2, 3, 4])],
  py: "F.relu(F.batch_norm(a, None, None, b, c, training=True, eps=1e-3) + d)",
  ts: (x, w, b, r) => F.batchNorm3d(x, w, b, null, null, { training: true, relu: true, residual: r }),
});
add({
  name: "batchNorm3d train + residual, no affine",
  inputs: [f([3, 2, 7]), f([3, 2, 7])],
  py: "F.batch_norm(a, None, None, training=True, eps=1e-3) + b",
  ts: (x, r) => F.batchNorm3d(x, null, null, null, null, { training: true, residual: r }),
});
add({
  name: "batchNorm3d train, mean 1000 (one-pass variance)",
  inputs: [f([2, 3, 4, 4, 4], { lo: 999, hi: 1001 }), f([3], bnW), f([3])],
  // Against the float64 truth: PyTorch's f32 is itself a rounding away from it, and which way an f32 mean
  // near 1000 rounds decides the output to ~1e-4 (its ulp is 6.1e-5, times 1 / std ~1.7 and the weight).
  py: "F.batch_norm(a.double(), None, None, b.double(), c.double(), training=True, eps=1e-3).float()",
  ts: (x, w, b) => F.batchNorm3d(x, w, b, null, null, { training: true }),
  // The mean must be within ~1 ulp of the truth; E[x^2] - E[x]^2 in f32 would put the variance ~10 % off.
  atol: 1.6e-4,
});
// More than 64 segments per channel: the finishing kernels merge several per lane.
add({
  name: "batchNorm3d train + relu, 66 vec4 segments per channel",
  inputs: [f([2, 1, 8, 128, 130]), f([1], bnW), f([1])],
  py: "F.relu(F.batch_norm(a, None, None, b, c, training=True, eps=1e-3))",
  ts: (x, w, b) => F.batchNorm3d(x, w, b, null, null, { training: true, relu: true }),
  big: true,
});
add({
  name: "batchNorm3d train, 86 scalar segments per channel",
  inputs: [f([3, 1, 7, 129, 129], { lo: 3, hi: 5 }), f([1], bnW), f([1])],
  py: "F.batch_norm(a, None, None, b, c, training=True, eps=1e-3)",
  ts: (x, w, b) => F.batchNorm3d(x, w, b, null, null, { training: true }),
  big: true,
});
add({
  name: "batchNorm3d eval + residual + relu",
  inputs: [
    f([2, 4, 3, 2, 2]),
    f([4], bnW),
    f([4]),
    f([4], { grad: false }),
    f([4], { lo: 0.5, hi: 2, grad: false }),
    f([2, 4, 3, 2, 2]),
  ],
  py: "F.relu(F.batch_norm(a, d, e, b, c, training=False, eps=1e-3) + f)",
  ts: (x, w, b, rm, rv, r) => F.batchNorm3d(x, w, b, rm, rv, { training: false, relu: true, residual: r }),
});
add({
  name: "maxPool3d stem pool (1,3,3) s(1,2,2) p(0,1,1)",
  inputs: [f([2, 3, 3, 9, 8])],
  py: "F.max_pool3d(a, (1, 3, 3), (1, 2, 2), (0, 1, 1))",
  ts: (x) => F.maxPool3d(x, { kernel: [1, 3, 3], stride: [1, 2, 2], padding: [0, 1, 1] }),
});
add({
  name: "maxPool3d 2x2x2 default stride, ties",
  inputs: [f([1, 2, 4, 5, 6], { ints: true })],
  py: "F.max_pool3d(a, 2)",
  ts: (x) => F.maxPool3d(x, { kernel: 2 }),
});
add({
  name: "maxPool3d 3x3x3 s2 p1",
  inputs: [f([2, 2, 5, 7, 6])],
  py: "F.max_pool3d(a, 3, 2, 1)",
  ts: (x) => F.maxPool3d(x, { kernel: 3, stride: 2, padding: 1 }),
});
// Rows of whole vec4s: the backward takes 4 inputs a lane (the stem pool above too).
add({
  name: "maxPool3d 3x3x3 s2 p1, rows of 12",
  inputs: [f([2, 2, 5, 7, 12])],
  py: "F.max_pool3d(a, 3, 2, 1)",
  ts: (x) => F.maxPool3d(x, { kernel: 3, stride: 2, padding: 1 }),
});
add({
  name: "maxPool3d 2x2x2 default stride, ties, rows of 8",
  inputs: [f([1, 2, 4, 5, 8], { ints: true })],
  py: "F.max_pool3d(a, 2)",
  ts: (x) => F.maxPool3d(x, { kernel: 2 }),
});
add({
  name: "adaptiveMaxPool3d 1",
  inputs: [f([2, 3, 3, 4, 5])],
  py: "F.adaptive_max_pool3d(a, 1)",
  ts: (x) => F.adaptiveMaxPool3d(x, 1),
});
add({
  name: "adaptiveAvgPool3d 1",
  inputs: [f([2, 3, 3, 4, 5])],
  py: "F.adaptive_avg_pool3d(a, 1)",
  ts: (x) => F.adaptiveAvgPool3d(x, 1),
});
add({
  name: "upsampleNearest3d (2,2,2)",
  inputs: [f([2, 3, 2, 3, 4])],
  py: "F.interpolate(a, scale_factor=(2, 2, 2), mode='nearest')",
  ts: (x) => F.upsampleNearest3d(x, [2, 2, 2]),
});
add({
  name: "upsampleNearest3d (1,2,2)",
  inputs: [f([1, 2, 3, 3, 5])],
  py: "F.interpolate(a, scale_factor=(1, 2, 2), mode='nearest')",
  ts: (x) => F.upsampleNearest3d(x, [1, 2, 2]),
});
// Output rows of whole vec4s take a lane per vec4 (W scale 1, 2, 4); the backward too where W % 4 == 0 (W
// scale 1, 2); (1,2,2) above on rows of 5 keeps the scalar kernels.
add({
  name: "upsampleNearest3d (2,3,1), rows of 8: vec4 lanes both ways",
  inputs: [f([2, 3, 2, 3, 8])],
  py: "F.interpolate(a, scale_factor=(2, 3, 1), mode='nearest')",
  ts: (x) => F.upsampleNearest3d(x, [2, 3, 1]),
});
add({
  name: "upsampleNearest3d (1,2,4), rows of 3 -> 12: vec4 forward, scalar backward",
  inputs: [f([1, 2, 3, 2, 3])],
  py: "F.interpolate(a, scale_factor=(1, 2, 4), mode='nearest')",
  ts: (x) => F.upsampleNearest3d(x, [1, 2, 4]),
});
// Trilinear resampling (align_corners false): up and down by odd, non-integer factors on every axis, one
// axis only (the others copy nothing), the segmentor's in-plane 8x, and the same size.
add({
  name: "interpolate trilinear, odd factors",
  inputs: [f([2, 3, 3, 5, 7])],
  py: "F.interpolate(a, size=(7, 4, 17), mode='trilinear', align_corners=False)",
  ts: (x) => F.interpolate(x, { size: [7, 4, 17] }),
});
add({
  name: "interpolate trilinear, down to 1 and 2",
  inputs: [f([1, 2, 5, 9, 4])],
  py: "F.interpolate(a, size=(1, 2, 3), mode='trilinear', align_corners=False)",
  ts: (x) => F.interpolate(x, { size: [1, 2, 3] }),
});
add({
  name: "interpolate in-plane 8x (the segmentor's 32 -> 256)",
  inputs: [f([1, 3, 2, 4, 5])],
  py: "F.interpolate(a, size=(2, 32, 40), mode='trilinear', align_corners=False)",
  ts: (x) => F.interpolate(x, { size: [2, 32, 40] }),
  big: true,
});
add({
  name: "interpolate, same size",
  inputs: [f([1, 2, 2, 3, 3])],
  py: "F.interpolate(a, size=(2, 3, 3), mode='trilinear', align_corners=False)",
  ts: (x) => F.interpolate(x, { size: [2, 3, 3] }),
});
// The argmax of in-plane resampled scores, with the bits of the classes above a threshold (infer/segment.ts).
const bitsPy = (C: number, t: number) =>
  `((r > ${t}).int() * (2 ** (8 + torch.arange(${C}, dtype=torch.int32))).view(1, ${C}, 1, 1, 1)).sum(1).int()`;
add({
  name: "resizedArgmax up 3x, odd sizes, threshold bits",
  inputs: [f([2, 5, 3, 4, 5], { grad: false })],
  py: `(lambda r: torch.argmax(r, 1).int() | ${bitsPy(5, 0.3)})(F.interpolate(a, size=(3, 11, 13), ` +
    `mode='trilinear', align_corners=False))`,
  ts: (x) => F.resizedArgmax(x, [11, 13], { threshold: 0.3 }),
});
add({
  name: "resizedArgmax down, no bits",
  inputs: [f([1, 3, 2, 9, 7], { grad: false })],
  py: "torch.argmax(F.interpolate(a, size=(2, 4, 3), mode='trilinear', align_corners=False), 1).int()",
  ts: (x) => F.resizedArgmax(x, [4, 3]),
});
add({
  name: "resizedArgmax same size (the argmax and bits themselves)",
  inputs: [f([1, 8, 2, 3, 5], { grad: false })],
  py: `(lambda r: torch.argmax(r, 1).int() | ${bitsPy(8, -0.5)})(a)`,
  ts: (x) => F.resizedArgmax(x, [3, 5], { threshold: -0.5 }),
});
add({
  name: "cat dim 1",
  inputs: [f([2, 3, 4]), f([2, 5, 4]), f([2, 1, 4])],
  py: "torch.cat([a, b, c], 1)",
  ts: (a, b, c) => F.cat([a, b, c], 1),
});
add({
  name: "cat dim 0",
  inputs: [f([2, 3]), f([1, 3])],
  py: "torch.cat([a, b], 0)",
  ts: (a, b) => F.cat([a, b], 0),
});
add({
  name: "cat dim -1",
  inputs: [f([2, 3, 2]), f([2, 3, 5])],
  py: "torch.cat([a, b], -1)",
  ts: (a, b) => F.cat([a, b], -1),
});
add({ name: "narrow", inputs: [f([3, 7, 2])], py: "a.narrow(1, 2, 4)", ts: (a) => F.narrow(a, 1, 2, 4) });
// Inner runs of whole vec4s (the decoder's cat of [N, C, D, H, W] along C) copy a vec4 a lane.
add({
  name: "cat dim 1 of 5-D (vec4 runs) and narrow of rows of 8",
  inputs: [f([2, 3, 2, 2, 4]), f([2, 5, 2, 2, 4]), f([2, 8, 2, 2, 4]), f([3, 7, 8])],
  // Weighted by a random tensor, so that every gradient element lands where it belongs.
  py: "(torch.cat([a, b], 1) * c).sum() + d.narrow(1, 2, 4).pow(2).sum()",
  ts: (a, b, c, d) => F.add(F.sum(F.mul(F.cat([a, b], 1), c)), F.sum(F.pow(F.narrow(d, 1, 2, 4), 2))),
});
add({
  name: "linear + bias",
  inputs: [f([2, 5, 7]), f([6, 7]), f([6])],
  py: "F.linear(a, b, c)",
  ts: (x, w, b) => F.linear(x, w, b),
});
add({
  name: "linear no bias",
  inputs: [f([4, 9]), f([3, 9])],
  py: "F.linear(a, b)",
  ts: (x, w) => F.linear(x, w),
});

// Losses on random and saturated logits.
const t01 = (shape: number[]) => ({ shape, lo: 0, hi: 2, ints: true, grad: false });
/** Integer class labels in [0, hi) as an i32 input. */
const labels = (shape: number[], hi: number) => ({ shape, dtype: "i32" as const, lo: 0, hi, ints: true });
add({
  name: "bceWithLogits mean",
  inputs: [f([4, 8], { lo: -4, hi: 4 }), t01([4, 8])],
  py: "F.binary_cross_entropy_with_logits(a, b)",
  ts: (x, t) => F.bceWithLogits(x, t),
});
add({
  name: "bceWithLogits saturated (|x| up to 100)",
  inputs: [f([4, 8], { lo: -100, hi: 100 }), t01([4, 8])],
  py: "F.binary_cross_entropy_with_logits(a, b, reduction='sum')",
  ts: (x, t) => F.bceWithLogits(x, t, { reduction: "sum" }),
});
add({
  name: "bceWithLogits weight + posWeight, none",
  inputs: [
    f([3, 8], { lo: -5, hi: 5 }),
    t01([3, 8]),
    f([3, 8], { lo: 0.5, hi: 2, grad: false }),
    f([8], { lo: 0.5, hi: 3, grad: false }),
  ],
  py: "F.binary_cross_entropy_with_logits(a, b, weight=c, pos_weight=d, reduction='none')",
  ts: (x, t, w, pw) => F.bceWithLogits(x, t, { weight: w, posWeight: pw, reduction: "none" }),
});
add({
  name: "bceWithLogits soft targets (target grad)",
  inputs: [f([5, 3], { lo: -3, hi: 3 }), f([5, 3], { lo: 0, hi: 1 })],
  py: "F.binary_cross_entropy_with_logits(a, b)",
  ts: (x, t) => F.bceWithLogits(x, t),
});
add({
  name: "rsnaLoss",
  inputs: [f([5, 8], { lo: -4, hi: 4 }), t01([5, 8])],
  py: "rsna_loss(a, b)",
  ts: (x, t) => models.rsnaLoss(x, t),
});
add({
  name: "rsnaLoss saturated",
  inputs: [f([5, 8], { lo: -60, hi: 60 }), t01([5, 8])],
  py: "rsna_loss(a, b)",
  ts: (x, t) => models.rsnaLoss(x, t),
});
add({
  name: "crossEntropy over a volume, ignoreIndex",
  inputs: [f([2, 4, 3, 2, 5], { lo: -3, hi: 3 }), labels([2, 3, 2, 5], 5)],
  py: "F.cross_entropy(a, b.long(), ignore_index=4)",
  ts: (x, t) => F.crossEntropy(x, t, { ignoreIndex: 4 }),
});
add({
  name: "crossEntropy saturated, sum",
  inputs: [f([6, 3], { lo: -80, hi: 80 }), labels([6], 3)],
  py: "F.cross_entropy(a, b.long(), reduction='sum')",
  ts: (x, t) => F.crossEntropy(x, t, { reduction: "sum" }),
});
add({
  name: "nllLoss over a volume, ignoreIndex, none",
  inputs: [f([2, 4, 3, 2, 5], { lo: -3, hi: 3 }), labels([2, 3, 2, 5], 5)],
  py: "F.nll_loss(F.log_softmax(a, 1), b.long(), ignore_index=4, reduction='none')",
  ts: (x, t) => F.nllLoss(F.logSoftmax(x, 1), t, { ignoreIndex: 4, reduction: "none" }),
});
add({
  name: "nllLoss mean",
  inputs: [f([6, 3], { lo: -2, hi: 0 }), labels([6], 3)],
  py: "F.nll_loss(a, b.long())",
  ts: (x, t) => F.nllLoss(x, t),
});
// Segmentation loss: labels with large blobs so that some classes pass the min-pixels rule and some do not.
add({
  name: "segLoss (focal + 0.1 Jaccard, min pixels)",
  inputs: [f([2, 8, 4, 6, 6], { lo: -3, hi: 3 }), labels([2, 4, 6, 6], 3.2)],
  py: "seg_loss(a, b)",
  ts: (x, t) => models.segLoss(x, t),
});
add({
  name: "segLoss saturated logits, ignore 255",
  inputs: [f([1, 3, 3, 6, 6], { lo: -50, hi: 50 }), labels([1, 3, 6, 6], 3)],
  py: "seg_loss(a, torch.where(b == 2, torch.tensor(255, dtype=torch.int32), b))",
  ts: (x, t) => models.segLoss(x, F.where(F.eq(t, 2), 255, t)),
});
add({
  name: "segLoss with fgWeight 20, Jaccard weight 1, ignore 255",
  inputs: [f([2, 5, 3, 5, 7], { lo: -3, hi: 3 }), labels([2, 3, 5, 7], 4.5)],
  py: "seg_loss(a, torch.where(b == 4, torch.tensor(255, dtype=torch.int32), b), jw=1.0, fg_weight=20.0)",
  ts: (x, t) => models.segLoss(x, F.where(F.eq(t, 4), 255, t), { jaccardWeight: 1, fgWeight: 20 }),
});
// The fused loss's partial kernel gives a lane 256 voxels: 660 voxels a sample take 3 strided lanes; gamma 1.5
// takes the pow path, gamma 1 the product path with a constant derivative.
add({
  name: "segLoss over 3 lanes a sample, gamma 1.5, fgWeight 3, ignore 255",
  inputs: [f([2, 5, 6, 10, 11], { lo: -4, hi: 4 }), labels([2, 6, 10, 11], 4.5)],
  py:
    "seg_loss(a, torch.where(b == 3, torch.tensor(255, dtype=torch.int32), b), gamma=1.5, jw=0.5, fg_weight=3.0)",
  ts: (x, t) =>
    models.segLoss(x, F.where(F.eq(t, 3), 255, t), { gamma: 1.5, jaccardWeight: 0.5, fgWeight: 3 }),
});
add({
  name: "segLoss gamma 1, min pixels 40, eps 1e-2",
  inputs: [f([3, 4, 5, 9, 7], { lo: -3, hi: 3 }), labels([3, 5, 9, 7], 3.5)],
  py: "seg_loss(a, b, gamma=1.0, min_pixels=40, eps=1e-2, jw=1.0)",
  ts: (x, t) => models.segLoss(x, t, { gamma: 1, minPixels: 40, eps: 1e-2, jaccardWeight: 1 }),
});

const suite = new CaseSuite(cases, 777);

Deno.test("nn ops match PyTorch (forward and backward)", async (t) => {
  const device = await openDevice();
  try {
    await suite.check(t, device);
  } finally {
    device.destroy();
  }
});

Deno.test("nn ops match PyTorch with tensors split across bindings", async (t) => {
  const device = await openDevice({ maxBindingBytes: 1024, maxWorkgroupsPerDim: 8, profile: "gpu" });
  try {
    await suite.check(t, device, true);
  } finally {
    device.destroy();
  }
});

Deno.test("batch norm on the gpu profile (the finishes folded into the per-element passes)", async (t) => {
  const device = await openDevice({ profile: "gpu", label: "gpu-profile" });
  try {
    await suite.check(t, device, false, (name) => name.startsWith("batchNorm3d"));
  } finally {
    device.destroy();
  }
});

Deno.test("batch norm running statistics match PyTorch after 3 training steps (both profiles)", async () => {
  for (const profile of ["cpu", "gpu"] as const) await runningStats(profile);
});

async function runningStats(profile: "cpu" | "gpu") {
  const device = await openDevice({ profile });
  try {
    const rng = prng(3);
    const xs = [0, 1, 2].map(() => randData(rng, 2 * 3 * 2 * 3 * 4, -2, 3));
    const ref = await torchRef([{
      expr:
        "(lambda m: [m(t) for t in [a, b, c]] and torch.cat([m.running_mean, m.running_var, m.num_batches_tracked.float().reshape(1)]))" +
        "(torch.nn.BatchNorm3d(3, eps=1e-3, momentum=0.1))",
      inputs: xs.map((d) => ({ data: d, shape: [2, 3, 2, 3, 4], dtype: "f32" as const })),
    }]);
    const bn = new nn.BatchNorm3d(3, { device, eps: 1e-3 });
    for (const d of xs) tidy(() => bn.forward(tensor(d, [2, 3, 2, 3, 4], { device })));
    const got = [
      ...await bn.runningMean.toArray(),
      ...await bn.runningVar.toArray(),
      ...await bn.numBatchesTracked.toArray(),
    ];
    assertClose(got, ref[0].out.data, `running_mean, running_var, num_batches_tracked (${profile} profile)`);
    bn.dispose();
  } finally {
    device.destroy();
  }
}

Deno.test("dropout: mask statistics, scale, eval identity, backward uses the same mask", async () => {
  const device = await openDevice();
  try {
    await tidy(async () => {
      const x = tensor(new Float32Array(20000).fill(1), [20000], { device, requiresGrad: true });
      const y = F.dropout(x, 0.3, { seed: 42 });
      const v = Array.from(await y.toArray());
      const kept = v.filter((e) => e !== 0);
      const frac = kept.length / v.length;
      if (Math.abs(frac - 0.7) > 0.02) throw new Error(`kept fraction ${frac}`);
      assertClose(kept, kept.map(() => 1 / 0.7), "scale");
      F.sum(y).backward();
      assertClose(await x.grad!.toArray(), v, "grad mask equals forward mask");
      const same = await F.dropout(x, 0.3, { seed: 42 }).toArray();
      assertClose(same, v, "same seed, same mask", 0, 0);
      assertClose(
        await F.dropout(x, 0.3, { training: false }).toArray(),
        new Float32Array(20000).fill(1),
        "eval",
        0,
        0,
      );
    });
  } finally {
    device.destroy();
  }
});

class Tiny extends nn.Module {
  conv: nn.Conv3d;
  bn: nn.BatchNorm3d;
  head: nn.Linear;
  constructor(device: Device, seed: number) {
    super();
    this.conv = this.registerModule("conv", new nn.Conv3d(2, 3, 3, { device, padding: 1, seed }));
    this.bn = this.registerModule("bn", new nn.BatchNorm3d(3, { device }));
    this.head = this.registerModule("head", new nn.Linear(3, 2, { device, seed: seed + 7 }));
  }
  forward(x: Tensor): Tensor {
    const h = F.relu(this.bn.forward(this.conv.forward(x)));
    return this.head.forward(F.mean(h, [2, 3, 4]));
  }
}

Deno.test("state dicts: PyTorch names, round trip, clear load errors", async () => {
  const device = await openDevice();
  try {
    const a = new Tiny(device, 1), b = new Tiny(device, 2);
    const keys = Object.keys(a.stateDict());
    const want = [
      "conv.weight",
      "conv.bias",
      "bn.weight",
      "bn.bias",
      "bn.running_mean",
      "bn.running_var",
      "bn.num_batches_tracked",
      "head.weight",
      "head.bias",
    ];
    if (keys.join() !== want.join()) throw new Error(`keys ${keys}`);
    if (a.parameters().length !== 6) throw new Error("parameter count");
    a.eval();
    b.eval();
    const x = tensor(randData(prng(1), 2 * 2 * 3 * 3 * 3), [2, 2, 3, 3, 3], { device });
    const ya = await tidy(() => a.forward(x).toArray());
    b.loadStateDict(a.stateDict());
    const yb = await tidy(() => b.forward(x).toArray());
    assertClose(yb, ya, "outputs after loading", 0, 0);
    const sd = { ...a.stateDict() };
    delete sd["bn.bias"];
    sd["extra.weight"] = sd["head.bias"];
    sd["head.weight"] = tensor(new Float32Array(6), [3, 2], { device });
    try {
      b.loadStateDict(sd);
      throw new Error("no error");
    } catch (e) {
      const m = (e as Error).message;
      for (
        const p of [
          "missing keys (1): bn.bias",
          "unexpected keys (1): extra.weight",
          "head.weight: checkpoint [3,2] vs model [2,3]",
        ]
      ) {
        if (!m.includes(p)) throw new Error(`"${m}" lacks "${p}"`);
      }
    }
    const r = b.loadStateDict({ "conv.weight": a.conv.weight }, { strict: false });
    if (r.missing.length !== 8) throw new Error("non-strict missing list");
    a.dispose();
    b.dispose();
  } finally {
    device.destroy();
  }
});

class Holder extends nn.Module {
  readonly list: nn.ModuleList<nn.Linear>;
  constructor(device: Device) {
    super();
    const lin = (seed: number) => new nn.Linear(2, 2, { device, seed });
    this.list = this.registerModule("layer", new nn.ModuleList([null, lin(1)]));
    this.list.append(lin(2)).append(null);
  }
  forward(x: Tensor): Tensor {
    return x;
  }
}

Deno.test("ModuleList: index names with holes, at(), iteration, no forward", async () => {
  const device = await openDevice();
  try {
    const h = new Holder(device);
    const keys = Object.keys(h.stateDict()).join();
    if (keys !== "layer.1.weight,layer.1.bias,layer.2.weight,layer.2.bias") throw new Error(`keys ${keys}`);
    if (h.list.length !== 4 || h.list.at(0) !== null || h.list.at(-2) !== h.list.at(2)) {
      throw new Error("length / at()");
    }
    if ([...h.list].length !== 2 || [...h.list][1] !== h.list.at(2)) throw new Error("iteration");
    for (const bad of [() => h.list.at(4), () => h.list.forward(h.list.at(1)!.weight)]) {
      try {
        bad();
        throw new Error("no error");
      } catch (e) {
        if (!/ModuleList: index 4 out of range|ModuleList has no forward/.test((e as Error).message)) throw e;
      }
    }
    h.eval();
    if (h.list.at(1)!.training) throw new Error("train() does not reach the children");
    h.dispose();
  } finally {
    device.destroy();
  }
});

Deno.test("eval batch norm without a backward (one pass on the running statistics) equals the two-pass one", async () => {
  for (const profile of ["cpu", "gpu"] as const) {
    const device = await openDevice({ profile, label: profile });
    try {
      const rng = prng(71);
      const x = randData(rng, 2 * 5 * 3 * 4 * 6, -2, 2), r = randData(rng, 2 * 5 * 3 * 4 * 6, -1, 1);
      const ps = [
        randData(rng, 5, 0.5, 1.5),
        randData(rng, 5, -1, 1),
        randData(rng, 5, -1, 1),
        randData(rng, 5, 0.2, 3),
      ];
      const run = (grad: boolean) =>
        tidy(() => {
          const t = (d: number[], s: number[]) => tensor(d, s, { device, requiresGrad: grad });
          const [w, b, rm, rv] = ps.map((p) => tensor(p, [5], { device }));
          const y = F.batchNorm3d(t(x, [2, 5, 3, 4, 6]), w, b, rm, rv, {
            residual: t(r, [2, 5, 3, 4, 6]),
            relu: true,
          });
          return y.toArray();
        });
      const one = await noGrad(() => run(false)), two = await run(true);
      assertClose(one, two, `${profile}: one-pass eval norm`, 0, 0);
    } finally {
      device.destroy();
    }
  }
});

Deno.test("segLoss rejects bad inputs with clear errors", async () => {
  const device = await openDevice();
  try {
    const x = tensor(new Float32Array(2 * 3 * 8), [2, 3, 8], { device });
    const t = tensor(new Int32Array(2 * 8), [2, 8], { device });
    assertThrows(() => models.segLoss(x, tensor(new Int32Array(2 * 7), [2, 7], { device })), "must be [2,8]");
    assertThrows(() => models.segLoss(x, tensor(new Float32Array(2 * 8), [2, 8], { device })), "i32 labels");
    assertThrows(() => models.segLoss(x, t, { gamma: -1 }), "gamma must be >= 0");
    const wide = tensor(new Float32Array(33 * 8), [1, 33, 8], { device });
    assertThrows(() => models.segLoss(wide, tensor(new Int32Array(8), [1, 8], { device })), "1-32 classes");
  } finally {
    device.destroy();
  }
});
