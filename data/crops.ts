/**
 * @file Vertebra crops from a label cube: each label's bounding box and voxel count (what the seed's
 * compute_meta takes from scikit-image's region properties, all voxels of a label forming one region, see
 * shared/docs/seed-pipeline.md section 3), and area resampling of a crop to the network's size.
 */

/** A label's bounding box (upper bounds exclusive) and its voxel count. */
export interface LabelBox {
  z0: number;
  y0: number;
  x0: number;
  z1: number;
  y1: number;
  x1: number;
  /** Voxels carrying the label. */
  area: number;
}

function checkShape(what: string, n: number, shape: readonly number[]): [number, number, number] {
  if (shape.length !== 3 || shape.some((d) => !Number.isInteger(d) || d < 0)) {
    throw new Error(`${what}: shape must be [Z, Y, X] of non-negative integers, got [${shape}]`);
  }
  const [Z, Y, X] = shape;
  if (Z * Y * X !== n) throw new Error(`${what}: ${n} values do not fill a [${shape}] cube`);
  return [Z, Y, X];
}

/**
 * Bounding box and voxel count of every label present in a [Z, Y, X] cube (row-major), by label value in
 * increasing order. `background` (default 0) is skipped; absent labels have no entry.
 */
export function labelBoxes(
  mask: ArrayLike<number>,
  shape: readonly number[],
  opts: { background?: number } = {},
): Map<number, LabelBox> {
  const [Z, Y, X] = checkShape("labelBoxes", mask.length, shape);
  const bg = opts.background ?? 0;
  const boxes = new Map<number, LabelBox>();
  for (let z = 0, i = 0; z < Z; z++) {
    for (let y = 0; y < Y; y++) {
      for (let x = 0; x < X; x++, i++) {
        const v = mask[i];
        if (v === bg) continue;
        const b = boxes.get(v);
        if (!b) {
          boxes.set(v, { z0: z, y0: y, x0: x, z1: z + 1, y1: y + 1, x1: x + 1, area: 1 });
          continue;
        }
        // z only grows in scan order, so z0 is set by the first voxel.
        b.z1 = z + 1;
        if (y < b.y0) b.y0 = y;
        if (y >= b.y1) b.y1 = y + 1;
        if (x < b.x0) b.x0 = x;
        if (x >= b.x1) b.x1 = x + 1;
        b.area++;
      }
    }
  }
  return new Map([...boxes].sort((a, b) => a[0] - b[0]));
}

/** Options of {@link resampleArea}. */
export interface ResampleAreaOptions {
  /** Subtracted from each cell's mean before scaling (default 0), so a z-score costs no second pass. */
  mean?: number;
  /** Each cell's mean minus `mean` is divided by this (default 1). */
  std?: number;
}

/**
 * Area resampling of a [Z, Y, X] volume to `outShape`: each output cell is the mean of the source voxels
 * it covers (source cells floor(t n / N) to max(that + 1, floor((t + 1) n / N)) along each axis), so a thin
 * crack survives downscaling; upscaling repeats voxels. Returns f32, optionally z-scored.
 */
export function resampleArea(
  src: ArrayLike<number>,
  shape: readonly number[],
  outShape: readonly number[],
  opts: ResampleAreaOptions = {},
): Float32Array {
  const [nz, ny, nx] = checkShape("resampleArea", src.length, shape);
  if (outShape.length !== 3 || outShape.some((d) => !Number.isInteger(d) || d < 1)) {
    throw new Error(`resampleArea: outShape must be [D, H, W] of positive integers, got [${outShape}]`);
  }
  if (nz * ny * nx === 0) throw new Error(`resampleArea: the source [${shape}] is empty`);
  const [D, H, W] = outShape;
  const mean = opts.mean ?? 0, std = opts.std ?? 1;
  const span = (t: number, n: number, N: number): [number, number] => {
    const a = Math.floor((t * n) / N), b = Math.max(a + 1, Math.floor(((t + 1) * n) / N));
    return [Math.min(a, n - 1), Math.min(b, n)];
  };
  const out = new Float32Array(D * H * W);
  for (let z = 0; z < D; z++) {
    const [za, zb] = span(z, nz, D);
    for (let y = 0; y < H; y++) {
      const [ya, yb] = span(y, ny, H);
      for (let x = 0; x < W; x++) {
        const [xa, xb] = span(x, nx, W);
        let sum = 0;
        for (let k = za; k < zb; k++) {
          for (let j = ya; j < yb; j++) {
            for (let i = xa; i < xb; i++) sum += src[(k * ny + j) * nx + i];
          }
        }
        out[(z * H + y) * W + x] = (sum / ((zb - za) * (yb - ya) * (xb - xa)) - mean) / std;
      }
    }
  }
  return out;
}
