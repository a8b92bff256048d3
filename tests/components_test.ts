/**
 * data/components.ts against scipy.ndimage.label (tests/components_fixtures.py): every component's size and
 * the largest-component volume, exactly, for 6 and 26 connectivity on odd shapes with blobs of several
 * labels touching each other, plus the errors.
 */
import { keepLargestComponents, labelComponents } from "../data/components.ts";
import { assertThrows, prng, pyFixture } from "./helpers.ts";

/** Random boxes of a few labels over a speckle of them: same-label voxels meet by faces, edges and corners
 * alike, so 6 and 26 connectivity give different components. */
function blobs(seed: number, shape: [number, number, number], labels: number): Uint8Array {
  const r = prng(seed), [Z, Y, X] = shape, v = new Uint8Array(Z * Y * X);
  for (let i = 0; i < v.length; i++) if (r() < 0.15) v[i] = 1 + Math.floor(r() * labels);
  for (let k = 0; k < 6; k++) {
    const c = 1 + Math.floor(r() * labels);
    const z0 = Math.floor(r() * Z), y0 = Math.floor(r() * Y), x0 = Math.floor(r() * X);
    const z1 = Math.min(Z, z0 + 1 + Math.floor(r() * 4)), y1 = Math.min(Y, y0 + 1 + Math.floor(r() * 6));
    const x1 = Math.min(X, x0 + 1 + Math.floor(r() * 6));
    for (let z = z0; z < z1; z++) {
      for (let y = y0; y < y1; y++) v.fill(c, (z * Y + y) * X + x0, (z * Y + y) * X + x1);
    }
  }
  return v;
}

const CASES: { shape: [number, number, number]; connectivity: 6 | 26; data: Uint8Array }[] = [];
for (
  const [i, shape] of ([[5, 7, 9], [3, 11, 6], [1, 13, 17], [9, 4, 5]] as [number, number, number][])
    .entries()
) {
  for (const connectivity of [6, 26] as const) {
    CASES.push({ shape, connectivity, data: blobs(40 + i, shape, 2 + i) });
  }
}

Deno.test("keepLargestComponents and labelComponents equal scipy.ndimage.label (6 and 26 connectivity)", async () => {
  const ref = await pyFixture("components_fixtures.py", {
    cases: CASES.map((c) => ({ shape: c.shape, connectivity: c.connectivity, data: Array.from(c.data) })),
  });
  for (const [k, c] of CASES.entries()) {
    const what = `[${c.shape}] connectivity ${c.connectivity}`;
    const { root, size } = labelComponents(c.data, c.shape, { connectivity: c.connectivity });
    const sizes: number[] = [];
    for (let i = 0; i < root.length; i++) if (root[i] === i) sizes.push(size[i]);
    sizes.sort((a, b) => a - b);
    if (sizes.join() !== ref.counts[k].join()) throw new Error(`${what}: sizes ${sizes} != ${ref.counts[k]}`);
    const kept = keepLargestComponents(c.data, c.shape, { connectivity: c.connectivity });
    const bad = kept.findIndex((v, i) => v !== ref.kept[k][i]);
    if (bad >= 0) throw new Error(`${what}: voxel ${bad} is ${kept[bad]}, scipy keeps ${ref.kept[k][bad]}`);
    // The cases must exercise the removal and, across connectivities, differ (else they test nothing).
    if (kept.every((v, i) => v === c.data[i])) throw new Error(`${what}: nothing was removed`);
  }
  const [a6, a26] = [CASES[0], CASES[1]].map((c) => keepLargestComponents(c.data, c.shape, c));
  if (a6.every((v, i) => v === a26[i])) throw new Error("6 and 26 connectivity agree on case 0");
});

Deno.test("keepLargestComponents: a background other than 0, and bad input named", () => {
  // [1, 2, 4], background 5: label 1 at (y 0, x 1), (y 0, x 3) and (y 1, x 0); the first and last touch
  // by an edge only, so 6-connectivity keeps the first single voxel in raster order, 26 the diagonal pair.
  const v = new Uint8Array([5, 1, 5, 1, 1, 5, 5, 5]);
  const k6 = keepLargestComponents(v, [1, 2, 4], { background: 5, connectivity: 6 });
  const k26 = keepLargestComponents(v, [1, 2, 4], { background: 5 });
  if (k6.join() !== "5,1,5,5,5,5,5,5") throw new Error(`6-connected: kept ${k6}`);
  if (k26.join() !== "5,1,5,5,1,5,5,5") throw new Error(`26-connected: kept ${k26}`);
  assertThrows(() => labelComponents(new Uint8Array(5), [1, 2, 3]), "5 labels do not fill [1,2,3]");
  assertThrows(() => labelComponents(new Uint8Array(6), [1, 2, 3], { connectivity: 8 as 6 }), "6 or 26");
  assertThrows(() => labelComponents(new Uint8Array(6), [2, 3]), "shape must be [Z, Y, X]");
});
