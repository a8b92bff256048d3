/**
 * The replayed 2-D augmentations against OpenCV 4.x + numpy + scipy (tests/augment_fixtures.py re-expresses
 * albumentations 1.3 and replays the steps drawn here; one Python process answers every case).
 * Masks must match exactly; float32 images within 1e-6 relative to the slice scale (OpenCV sums bilinear
 * taps in float32 in the same order, so they agree to rounding); scipy's gaussian_filter within 1e-12.
 */
import {
  applyPlan,
  type AugmentPlan,
  type AugmentStep,
  cropAugment,
  drawAugment,
  elasticMatrix,
  elasticNoise,
  segAugment,
  shiftScaleRotateMatrix,
  type TransformSpec,
} from "../data/augment.ts";
import { gaussianFilter } from "../data/augment/cv.ts";
import { assertClose, prng } from "./helpers.ts";

const PY = Deno.env.get("CSN_PYTHON") ?? "/usr/bin/python3";
const IMG_RTOL = 1e-6;

interface Volume {
  image: Float32Array;
  mask: Uint8Array;
  shape: [number, number, number];
}

function volume(seed: number, z: number, h: number, w: number): Volume {
  const r = prng(seed), n = z * h * w;
  const image = new Float32Array(n), mask = new Uint8Array(n);
  // Smooth structure plus noise so interpolation is exercised; labels 0..7 as in the seg masks.
  for (let i = 0; i < n; i++) {
    const x = i % w, y = Math.floor(i / w) % h;
    image[i] = 800 * Math.sin(x * 0.3 + y * 0.17) + 300 * (r() - 0.5) - 200;
    mask[i] = Math.floor(r() * 8);
  }
  return { image, mask, shape: [z, h, w] };
}

interface PlanCase {
  what: string;
  plan: AugmentPlan;
  vol: Volume;
}

interface PlanResult {
  image: number[];
  mask: number[] | null;
  shape: number[];
  matrices: Record<string, number[]>;
}

function plan(h: number, w: number, steps: AugmentStep[], outH = h, outW = w): AugmentPlan {
  return { height: h, width: w, outHeight: outH, outWidth: outW, steps };
}

const cases: PlanCase[] = [];
const add = (what: string, p: AugmentPlan, z = 2, seed = 7) =>
  cases.push({ what, plan: p, vol: volume(seed + cases.length, z, p.height, p.width) });
const forced = (spec: TransformSpec[]): TransformSpec[] =>
  spec.map((t) => (t.name === "OneOf" ? { ...t, p: 1, transforms: forced(t.transforms) } : { ...t, p: 1 }));

// ShiftScaleRotate: random draws, plus angles whose sampling positions fall on exact pixel/fraction
// boundaries (90, 180 degrees) where the fixed-point rounding decides.
for (const seed of [1, 2, 3, 4, 5]) {
  const [h, w] = seed % 2 ? [37, 53] : [53, 37];
  add(`ShiftScaleRotate seed ${seed}`, drawAugment(forced([segAugment()[0]]), prng(seed), h, w));
}
for (
  const [angle, scale, dx, dy] of [[90, 1, 0, 0], [180, 1, 0, 0], [-90, 1, 0.1, -0.1], [-45, 1.3, 0.2, 0.05]]
) {
  add(`ShiftScaleRotate ${angle} deg`, plan(37, 53, [{ name: "ShiftScaleRotate", angle, scale, dx, dy }]));
}
add("HorizontalFlip", plan(37, 53, [{ name: "HorizontalFlip" }]));
add("VerticalFlip", plan(37, 53, [{ name: "VerticalFlip" }]));
for (const k of [0, 1, 2, 3]) {
  add(
    `RandomRotate90 k=${k}`,
    plan(37, 53, [{ name: "RandomRotate90", k }], ...(k % 2 ? [53, 37] : [37, 53]) as [number, number]),
  );
}
for (const [h, w, m] of [[37, 53, 64], [100, 60, 50], [64, 32, 32], [53, 37, 256], [31, 31, 40]]) {
  add(
    `LongestMaxSize ${h}x${w} -> ${m}`,
    drawAugment([{ name: "LongestMaxSize", maxSize: m }], prng(1), h, w),
    1,
  );
}
add("PadIfNeeded", drawAugment([{ name: "PadIfNeeded", minHeight: 64, minWidth: 60 }], prng(1), 37, 53));
for (const seed of [1, 2, 3]) {
  const spec: TransformSpec = {
    name: "GridDistortion",
    numSteps: 5,
    distortLimit: seed === 3 ? 0.3 : 0.1,
    p: 1,
  };
  add(`GridDistortion seed ${seed}`, drawAugment([spec], prng(seed), 37, 53));
}
// Tiny widths hit grid_distortion's quirks (zero-width cells; a cell past the last full one).
add(
  "GridDistortion 9x4",
  drawAugment([{ name: "GridDistortion", numSteps: 5, distortLimit: 0.3, p: 1 }], prng(4), 9, 4),
);
for (const seed of [1, 2]) {
  const spec: TransformSpec = { name: "ElasticTransform", alpha: 1, sigma: 50, alphaAffine: 50, p: 1 };
  add(`ElasticTransform seed ${seed}`, drawAugment([spec], prng(seed), 37, 53));
}
// A strong, fine-grained field so the remap really moves pixels by fractions.
add(
  "ElasticTransform alpha 40 sigma 3",
  drawAugment([{ name: "ElasticTransform", alpha: 40, sigma: 3, alphaAffine: 5, p: 1 }], prng(3), 37, 53),
);
// Whole presets, forced and as drawn.
for (const seed of [1, 2]) {
  add(`segAugment forced seed ${seed}`, drawAugment(forced(segAugment()), prng(seed), 37, 53), 3);
  add(
    `cropAugment train forced seed ${seed}`,
    drawAugment(forced(cropAugment({ train: true, size: 48 })), prng(seed), 37, 29),
    3,
  );
}
// The tiny preset's 32-px slices: the seed's pixel lengths scaled (sigma 6.25, alpha_affine 6.25).
for (const seed of [1, 2]) {
  add(`segAugment(32) forced seed ${seed}`, drawAugment(forced(segAugment(32)), prng(seed), 32, 32), 3);
}
for (const seed of [3, 4, 5, 6]) {
  add(`segAugment seed ${seed}`, drawAugment(segAugment(), prng(seed), 41, 47));
  add(
    `cropAugment train seed ${seed}`,
    drawAugment(cropAugment({ train: true, size: 64 }), prng(seed), 70, 41),
  );
}
add("cropAugment val", drawAugment(cropAugment({ train: false, size: 64 }), prng(1), 30, 41));

const GAUSS: [number, number, number][] = [[7, 5, 50], [37, 53, 3], [37, 53, 50], [1, 9, 0.7]];

let answer: Promise<unknown[]> | null = null;
function reference(): Promise<unknown[]> {
  if (answer) return answer;
  const input = [
    ...cases.map((c) => {
      const noise: Record<string, { dx: number[]; dy: number[] }> = {};
      let h = c.plan.height, w = c.plan.width;
      c.plan.steps.forEach((s, i) => {
        if (s.name === "ElasticTransform") {
          const n = elasticNoise(s.noiseSeed, h, w);
          noise[String(i)] = { dx: Array.from(n.dx), dy: Array.from(n.dy) };
        }
        if (s.name === "RandomRotate90" && s.k % 2) [h, w] = [w, h];
        if (s.name === "LongestMaxSize") [h, w] = [s.height, s.width];
        if (s.name === "PadIfNeeded") [h, w] = [h + s.top + s.bottom, w + s.left + s.right];
      });
      return {
        kind: "plan",
        shape: c.vol.shape,
        image: Array.from(c.vol.image),
        mask: Array.from(c.vol.mask),
        steps: c.plan.steps,
        noise,
      };
    }),
    ...GAUSS.map(([h, w, sigma], i) => ({
      kind: "gauss",
      shape: [h, w],
      sigma,
      data: Array.from(elasticNoise(100 + i, h, w).dx),
    })),
  ];
  answer = (async () => {
    const script = new URL("./augment_fixtures.py", import.meta.url).pathname;
    const p = new Deno.Command(PY, { args: [script], stdin: "piped", stdout: "piped", stderr: "piped" })
      .spawn();
    const wr = p.stdin.getWriter();
    await wr.write(new TextEncoder().encode(JSON.stringify(input)));
    await wr.close();
    const o = await p.output();
    if (!o.success) {
      throw new Error(
        `augment_fixtures.py failed (python3-opencv, scipy?):\n${new TextDecoder().decode(o.stderr)}`,
      );
    }
    return JSON.parse(new TextDecoder().decode(o.stdout));
  })();
  return answer;
}

function assertImage(actual: Float32Array, expected: number[], what: string): void {
  let scale = 0;
  for (const v of expected) scale = Math.max(scale, Math.abs(v));
  assertClose(actual, expected, what, 0, IMG_RTOL * Math.max(scale, 1));
}

function assertExact(actual: ArrayLike<number>, expected: ArrayLike<number>, what: string): void {
  if (actual.length !== expected.length) {
    throw new Error(`${what}: length ${actual.length} != ${expected.length}`);
  }
  let bad = 0, first = -1;
  for (let i = 0; i < expected.length; i++) {
    if (actual[i] !== expected[i]) {
      bad++;
      if (first < 0) first = i;
    }
  }
  if (bad) {
    throw new Error(
      `${what}: ${bad} values differ, first at ${first}: ${actual[first]} != ${expected[first]}`,
    );
  }
}

Deno.test("every transform and preset matches OpenCV/numpy (masks exact)", async () => {
  const ref = (await reference()) as PlanResult[];
  let worst = 0, differ = 0, total = 0;
  for (const [i, c] of cases.entries()) {
    const r = ref[i];
    const out = applyPlan(c.plan, c.vol.image, c.vol.mask, c.vol.shape);
    const what = `${c.what} (${c.plan.steps.map((s) => s.name).join(", ") || "identity"})`;
    if (out.shape.join() !== r.shape.join()) throw new Error(`${what}: shape [${out.shape}] != [${r.shape}]`);
    assertExact(out.mask!, r.mask!, `${what} mask`);
    assertImage(out.image, r.image, `${what} image`);
    let h = c.plan.height, w = c.plan.width;
    c.plan.steps.forEach((s, k) => {
      const m = r.matrices[String(k)];
      if (s.name === "ShiftScaleRotate") {
        assertClose(shiftScaleRotateMatrix(h, w, s), m, `${what} matrix`, 1e-12, 1e-12);
      }
      if (s.name === "ElasticTransform") {
        assertClose(elasticMatrix(h, w, s.shifts), m, `${what} matrix`, 1e-9, 1e-9);
      }
      if (s.name === "RandomRotate90" && s.k % 2) [h, w] = [w, h];
      if (s.name === "LongestMaxSize") [h, w] = [s.height, s.width];
      if (s.name === "PadIfNeeded") [h, w] = [h + s.top + s.bottom, w + s.left + s.right];
    });
    for (let j = 0; j < out.image.length; j++) {
      worst = Math.max(worst, Math.abs(out.image[j] - r.image[j]));
      if (out.image[j] !== r.image[j]) differ++;
      total++;
    }
  }
  // On OpenCV 4.6's SSE build every value is bit-identical; other SIMD widths may move a few by an ulp.
  console.log(
    `${cases.length} plans; ${differ} of ${total} image values not bit-identical, worst |diff| ${worst}`,
  );
});

Deno.test("gaussianFilter equals scipy.ndimage.gaussian_filter (mode reflect, truncate 4)", async () => {
  const ref = (await reference()).slice(cases.length) as { out: number[] }[];
  GAUSS.forEach(([h, w, sigma], i) => {
    const got = gaussianFilter(elasticNoise(100 + i, h, w).dx, h, w, sigma);
    assertClose(got, ref[i].out, `gaussian ${h}x${w} sigma ${sigma}`, 1e-10, 1e-14);
  });
});

Deno.test("one draw is replayed on every slice; plans survive JSON", () => {
  const z = 4, h = 33, w = 45, one = volume(3, 1, h, w);
  const vol: Volume = {
    image: new Float32Array(z * h * w),
    mask: new Uint8Array(z * h * w),
    shape: [z, h, w],
  };
  for (let k = 0; k < z; k++) vol.image.set(one.image, k * h * w), vol.mask.set(one.mask, k * h * w);
  for (const seed of [1, 2, 3]) {
    const p = drawAugment(forced(segAugment()), prng(seed), h, w);
    const out = applyPlan(p, vol.image, vol.mask, vol.shape);
    const n2 = out.shape[1] * out.shape[2];
    for (let k = 1; k < z; k++) {
      assertExact(
        out.image.subarray(k * n2, (k + 1) * n2),
        out.image.subarray(0, n2),
        `seed ${seed} slice ${k}`,
      );
      assertExact(
        out.mask!.subarray(k * n2, (k + 1) * n2),
        out.mask!.subarray(0, n2),
        `seed ${seed} mask ${k}`,
      );
    }
    const again = applyPlan(JSON.parse(JSON.stringify(p)), vol.image, null, vol.shape);
    assertExact(again.image, out.image, `seed ${seed} JSON round trip`);
    if (again.mask !== null) throw new Error("mask should stay null");
    // The transform really changed something (the test could not pass on an identity).
    let moved = 0;
    for (let j = 0; j < n2; j++) if (out.image[j] !== one.image[j]) moved++;
    if (moved < n2 / 4) throw new Error(`seed ${seed}: only ${moved} pixels changed`);
  }
});

Deno.test("failed p draws give the identity; shapes after rotate / resize / pad", () => {
  const v = volume(5, 2, 37, 53);
  const never = () => 0.999999;
  const p = drawAugment(segAugment(), never, 37, 53);
  if (p.steps.length !== 0) throw new Error(`steps drawn with failing p: ${JSON.stringify(p.steps)}`);
  const out = applyPlan(p, v.image, v.mask, v.shape);
  assertExact(out.image, v.image, "identity image");
  assertExact(out.mask!, v.mask, "identity mask");
  const zero = drawAugment(forced(segAugment()).map((t) => ({ ...t, p: 0 })), prng(1), 37, 53);
  if (zero.steps.length !== 0) throw new Error("p = 0 drew steps");

  const r = applyPlan(plan(37, 53, [{ name: "RandomRotate90", k: 1 }], 53, 37), v.image, v.mask, v.shape);
  if (r.shape.join() !== "2,53,37") throw new Error(`rot90 shape ${r.shape}`);
  const crop = drawAugment(cropAugment({ train: true }), prng(2), 300, 180);
  if (crop.outHeight !== 256 || crop.outWidth !== 256) {
    throw new Error(`crop plan ${crop.outHeight}x${crop.outWidth}`);
  }
  const big = volume(1, 1, 300, 180), c = applyPlan(crop, big.image, big.mask, big.shape);
  if (c.shape.join() !== "1,256,256") throw new Error(`crop shape ${c.shape}`);
  const lm = drawAugment(cropAugment({ train: false }), prng(1), 300, 180);
  const rs = lm.steps[0], pd = lm.steps[1];
  if (rs.name !== "LongestMaxSize" || rs.height !== 256 || rs.width !== 154) {
    throw new Error(JSON.stringify(rs));
  }
  if (pd.name !== "PadIfNeeded" || pd.left !== 51 || pd.right !== 51 || pd.top !== 0) {
    throw new Error(JSON.stringify(pd));
  }
});

Deno.test("segAugment keeps the seed's distortions in proportion on smaller slices", () => {
  if (JSON.stringify(segAugment(256)) !== JSON.stringify(segAugment())) {
    throw new Error("segAugment(256) is not the seed's augmentation");
  }
  const elastic = (spec: TransformSpec[]) => ({
    ...(spec[2] as { transforms: TransformSpec[] }).transforms[1],
    p: 1,
  });
  // The share of a 32 x 32 slice that a forced ElasticTransform leaves inside the slice, 10th percentile of
  // 100 draws: the seed's 50-px alpha_affine at 32 px throws whole slices out (why it is scaled).
  const p10 = (t: TransformSpec) => {
    const n = 32 * 32, mask = new Uint8Array(n).fill(1), image = new Float32Array(n);
    const kept: number[] = [];
    for (let seed = 1; seed <= 100; seed++) {
      const out = applyPlan(drawAugment([t], prng(seed), 32, 32), image, mask, [1, 32, 32]);
      kept.push(out.mask!.reduce((a, b) => a + b, 0) / n);
    }
    return kept.sort((a, b) => a - b)[10];
  };
  const scaled = p10(elastic(segAugment(32))), seeds = p10(elastic(segAugment()));
  if (!(scaled > 0.4)) throw new Error(`scaled: 10th percentile of the slice kept ${scaled}, want > 0.4`);
  if (!(seeds < 0.05)) throw new Error(`unscaled at 32 px: 10th percentile kept ${seeds}, expected ~0`);
});

Deno.test("bad input is named", () => {
  const v = volume(1, 2, 10, 12);
  const p = drawAugment(segAugment(), prng(1), 10, 12);
  const expectThrow = (f: () => unknown, part: string) => {
    try {
      f();
    } catch (e) {
      if (!(e as Error).message.includes(part)) throw new Error(`"${(e as Error).message}" lacks "${part}"`);
      return;
    }
    throw new Error(`no error (${part})`);
  };
  expectThrow(() => applyPlan(p, v.image, v.mask, [2, 12, 10]), "does not match");
  expectThrow(() => segAugment(0), "size must be > 0");
  expectThrow(() => applyPlan(p, v.image.subarray(1), v.mask, [2, 10, 12]), "image has");
  expectThrow(() => applyPlan(p, v.image, v.mask.subarray(1), [2, 10, 12]), "mask has");
  expectThrow(() => drawAugment([{ name: "HorizontalFlip", p: 2 }], prng(1), 10, 12), "p must be in [0, 1]");
  expectThrow(() => drawAugment(segAugment(), prng(1), 0, 12), "slice shape");
  expectThrow(
    () => drawAugment([{ name: "Blur", p: 1 } as unknown as TransformSpec], prng(1), 10, 12),
    'unknown transform "Blur"',
  );
  expectThrow(
    () =>
      applyPlan({ ...p, steps: [{ name: "Nope" } as unknown as AugmentStep] }, v.image, null, [2, 10, 12]),
    "unknown step",
  );
});
