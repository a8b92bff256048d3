/**
 * @file Connected components of a label volume, for the post-processing MONAI calls
 * `KeepLargestConnectedComponent`: each label keeps only its largest connected region. A segmentor's argmax
 * scatters small islands of a level's label over its neighbours (the phantoms' C1 predicted from slice 3
 * to 38 where the vertebra spans 5 to 9); the seed's box takes every voxel of a label, so one island moves
 * the crop onto the wrong vertebra (docs/recipe.md, "Largest components").
 */

/** Options of {@link keepLargestComponents}. */
export interface ComponentOptions {
  /** 6 (faces) or 26 (faces, edges and corners, MONAI's and scikit-image's default in 3-D). Default 26. */
  connectivity?: 6 | 26;
  /** Label value left alone and never kept as a component (default 0). */
  background?: number;
}

// Neighbours already visited in raster order (z, y, x): 3 of the 6 face neighbours, 13 of the 26.
const BEFORE_6: [number, number, number][] = [[-1, 0, 0], [0, -1, 0], [0, 0, -1]];
const BEFORE_26: [number, number, number][] = [];
for (let dz = -1; dz <= 0; dz++) {
  for (let dy = -1; dy <= 1; dy++) {
    for (let dx = -1; dx <= 1; dx++) {
      if (dz === 0 && (dy > 0 || (dy === 0 && dx >= 0))) continue;
      BEFORE_26.push([dz, dy, dx]);
    }
  }
}

function find(parent: Int32Array, i: number): number {
  while (parent[i] !== i) {
    parent[i] = parent[parent[i]];
    i = parent[i];
  }
  return i;
}

/**
 * Component of every voxel of a [Z, Y, X] label volume (row-major): voxels with the same non-background
 * label that touch (by `connectivity`) share a root index; background voxels get -1. Returns the roots and
 * each root's voxel count (indexed by voxel). One raster pass with union-find: memory is two Int32Arrays of
 * the volume's length.
 */
export function labelComponents(
  labels: ArrayLike<number>,
  shape: readonly number[],
  opts: ComponentOptions = {},
): { root: Int32Array; size: Int32Array } {
  if (shape.length !== 3 || shape.some((d) => !Number.isInteger(d) || d < 0)) {
    throw new Error(`labelComponents: shape must be [Z, Y, X] of non-negative integers, got [${shape}]`);
  }
  const [Z, Y, X] = shape, n = Z * Y * X;
  if (labels.length !== n) throw new Error(`labelComponents: ${labels.length} labels do not fill [${shape}]`);
  const conn = opts.connectivity ?? 26;
  if (conn !== 6 && conn !== 26) {
    throw new Error(`labelComponents: connectivity must be 6 or 26, got ${conn}`);
  }
  const bg = opts.background ?? 0, offsets = conn === 6 ? BEFORE_6 : BEFORE_26;
  const parent = new Int32Array(n).fill(-1);
  for (let z = 0, i = 0; z < Z; z++) {
    for (let y = 0; y < Y; y++) {
      for (let x = 0; x < X; x++, i++) {
        const v = labels[i];
        if (v === bg) continue;
        parent[i] = i;
        for (const [dz, dy, dx] of offsets) {
          const zz = z + dz, yy = y + dy, xx = x + dx;
          if (zz < 0 || yy < 0 || yy >= Y || xx < 0 || xx >= X) continue;
          const j = (zz * Y + yy) * X + xx;
          if (labels[j] !== v) continue;
          const a = find(parent, i), b = find(parent, j);
          // The smaller index becomes the root, so roots do not depend on the order of unions.
          if (a !== b) parent[Math.max(a, b)] = Math.min(a, b);
        }
      }
    }
  }
  const size = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    if (parent[i] < 0) continue;
    parent[i] = find(parent, i);
    size[parent[i]]++;
  }
  return { root: parent, size };
}

/**
 * MONAI's `KeepLargestConnectedComponent` for every label at once: a copy of the [Z, Y, X] label volume
 * where each non-background label keeps only its largest connected region (ties: the one met first in
 * raster order) and its other voxels become background.
 */
export function keepLargestComponents(
  labels: Uint8Array,
  shape: readonly number[],
  opts: ComponentOptions = {},
): Uint8Array {
  const { root, size } = labelComponents(labels, shape, opts);
  const best = new Map<number, number>();
  for (let i = 0; i < labels.length; i++) {
    if (root[i] !== i) continue;
    const b = best.get(labels[i]);
    if (b === undefined || size[i] > size[b]) best.set(labels[i], i);
  }
  const kept = new Set(best.values()), bg = opts.background ?? 0;
  const out = new Uint8Array(labels.length);
  for (let i = 0; i < labels.length; i++) out[i] = root[i] >= 0 && kept.has(root[i]) ? labels[i] : bg;
  return out;
}
