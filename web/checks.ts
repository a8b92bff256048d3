/**
 * @file The same computations run in Deno and in the page (tests/web_test.ts compares them): a set of ops
 * on seeded inputs whose shapes reach the tiled and windowed kernel paths, and a tiny CSN forward (UNet and
 * classifier, seeded weights). Only engine APIs: it is bundled into the page.
 */
import { type Device, F, models, nn, noGrad, type Tensor, tensor, tidy } from "../mod.ts";
import { mulberry32 } from "../core/random.ts";

function randomTensor(device: Device, shape: number[], seed: number): Tensor {
  const r = mulberry32(seed);
  const n = shape.reduce((a, b) => a * b, 1);
  const data = new Float32Array(n);
  for (let i = 0; i < n; i++) data[i] = r() * 2 - 1;
  return tensor(data, shape, { device });
}

/**
 * Each op's output on `device` as plain arrays (name -> values): matmul (tiled and narrow), linear, 3D
 * convolutions (dense with stride/padding, depthwise, pointwise), (2+1)D, batch norm, pools, upsampling,
 * softmax, reductions, argmax and elementwise maps.
 */
export async function opsSuite(device: Device, seed = 1): Promise<Record<string, number[]>> {
  const out: Record<string, number[]> = {};
  await tidy(async () => {
    await noGrad(async () => {
      let s = seed * 100;
      const t = (shape: number[]) => randomTensor(device, shape, s++);
      const x = t([1, 4, 6, 10, 12]);
      const r: Record<string, Tensor> = {
        matmul: F.matmul(t([70, 130]), t([130, 90])),
        matmulNarrow: F.matmul(t([5, 3]), t([3, 300])),
        linear: F.linear(t([3, 40]), t([8, 40]), t([8])),
        conv3d: F.conv3d(x, t([6, 4, 3, 3, 3]), t([6]), { stride: [1, 2, 2], padding: 1 }),
        conv3dDepthwise: F.conv3d(x, t([4, 1, 3, 3, 3]), null, { padding: 1, groups: 4 }),
        conv3dPointwise: F.conv3d(x, t([8, 4, 1, 1, 1]), t([8])),
        conv2p1d: F.conv2p1d(x, t([5, 4, 1, 3, 3]), t([5]), t([6, 5, 3, 1, 1]), t([6])),
        batchNorm3d: F.batchNorm3d(x, t([4]), t([4]), t([4]), F.add(F.abs(t([4])), 0.5), { training: false }),
        maxPool3d: F.maxPool3d(x, { kernel: 3, stride: 2, padding: 1 }),
        adaptiveAvgPool3d: F.adaptiveAvgPool3d(x, 1),
        upsampleNearest3d: F.upsampleNearest3d(x, 2),
        softmax: F.softmax(x, 1),
        sum: F.sum(x, [2, 3]),
        mean: F.mean(x),
        argmax: F.argmax(x, 1),
        relu: F.relu(x),
        sigmoid: F.sigmoid(x),
      };
      for (const [k, v] of Object.entries(r)) out[k] = Array.from(await v.toArray() as ArrayLike<number>);
    });
  });
  return out;
}

/** Tiny CSN models' outputs on seeded input: the UNet's logits and the classifier's. */
export async function csnForward(device: Device, seed = 2): Promise<Record<string, number[]>> {
  const out: Record<string, number[]> = {};
  nn.seedInit(seed);
  const unet = new models.CSNUNet({
    device,
    encoder: "r26ir",
    baseChannels: 4,
    decoderFilters: [4, 4, 4, 4],
    lastChannels: 4,
    numClasses: 8,
  });
  const cls = new models.CSNClassifier({ device, encoder: "r26ip", baseChannels: 4, numClasses: 8 });
  unet.eval();
  cls.eval();
  try {
    await tidy(async () => {
      await noGrad(async () => {
        const u = unet.forward(randomTensor(device, [1, 1, 8, 32, 32], seed * 7));
        out.unet = Array.from(await u.toArray() as ArrayLike<number>);
        const c = cls.forward(randomTensor(device, [2, 3, 8, 32, 32], seed * 7 + 1));
        out.classifier = Array.from(await c.toArray() as ArrayLike<number>);
      });
    });
  } finally {
    unet.dispose();
    cls.dispose();
  }
  return out;
}
