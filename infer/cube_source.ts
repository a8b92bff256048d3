/**
 * @file Where the classifier's crops come from: a `CubeSource` gives a study's header (shapes, mean/std)
 * and reads boxes of its cubes, image_full, image_256 and the predicted labels ("pred", [ceil(Z/2), G, G]),
 * either from the preprocessing cache (data/cache.ts `readCube` + the seg_pred.raw of infer/meta.ts) or
 * from memory (an `InMemoryStudy` of infer/study.ts plus the labels just predicted). Both clip a box to the
 * cube like `readCube` and return the same element types, so a crop built from either is the same.
 */
import { type Box, type CacheHeader, readCube, readHeader } from "../data/cache.ts";
import { readSegMetaFile, segPaths } from "./meta.ts";
import type { InMemoryStudy } from "./study.ts";

/** A cube of a source: the two image cubes and the predicted labels. */
export type SourceCube = "image_full" | "image_256" | "pred";

/** A box read from a cube: [nz, ny, nx] in the cube's element type (uint8 for "pred"). */
export interface CubeBox {
  data: Int16Array | Uint16Array | Uint8Array;
  shape: [number, number, number];
}

/** Reads boxes of a study's cubes. */
export interface BoxReader {
  /** Names the study's storage in error messages. */
  readonly name: string;
  /** Reads a box (half-open ranges clipped to the cube; `zStep` 2 reads z0, z0 + 2, ...). */
  readBox(cube: SourceCube, box?: Box): Promise<CubeBox>;
}

/** A study's cubes with its header: what the classifier's readers need. */
export interface CubeSource extends BoxReader {
  readonly uid: string;
  /** The cache's header.json (mean/std of the 256 cube: the seed's meta image_mean / image_std). */
  readonly header: CacheHeader;
  /** Shape of image_full [Z, H, W]. */
  readonly full: [number, number, number];
  /** Shape of the predicted labels [ceil(Z/2), G, G]; null when there is no prediction. */
  readonly grid: [number, number, number] | null;
}

interface Extent {
  z0: number;
  step: number;
  nz: number;
  y0: number;
  ny: number;
  x0: number;
  nx: number;
}

/** The box clipped to dims [Z, Y, X], as `readCube` clips it. */
function extent(dims: readonly number[], box: Box, where: string): Extent {
  const step = box.zStep ?? 1;
  if (!Number.isInteger(step) || step < 1) throw new Error(`${where}: zStep must be an integer >= 1`);
  const clip = (r: [number, number] | undefined, n: number): [number, number] => {
    const [a, b] = r ?? [0, n];
    return [Math.max(0, Math.min(n, a)), Math.max(0, Math.min(n, b))];
  };
  const [z0, z1] = clip(box.z, dims[0]), [y0, y1] = clip(box.y, dims[1]), [x0, x1] = clip(box.x, dims[2]);
  return {
    z0,
    step,
    nz: Math.max(0, Math.ceil((z1 - z0) / step)),
    y0,
    ny: Math.max(0, y1 - y0),
    x0,
    nx: Math.max(0, x1 - x0),
  };
}

/** A box of an in-memory cube [Z, Y, X] (copied), clipped like `readCube`. */
export function sliceBox<T extends Int16Array | Uint16Array | Uint8Array>(
  data: T,
  dims: readonly [number, number, number],
  box: Box = {},
  where = "sliceBox",
): { data: T; shape: [number, number, number] } {
  const [Z, Y, X] = dims;
  if (data.length !== Z * Y * X) throw new Error(`${where}: ${data.length} values do not fill [${dims}]`);
  const e = extent(dims, box, where);
  const out = new (data.constructor as new (n: number) => T)(e.nz * e.ny * e.nx);
  for (let k = 0; k < e.nz; k++) {
    const z = e.z0 + k * e.step;
    for (let r = 0; r < e.ny; r++) {
      const src = (z * Y + e.y0 + r) * X + e.x0;
      out.set(data.subarray(src, src + e.nx), (k * e.ny + r) * e.nx);
    }
  }
  return { data: out, shape: [e.nz, e.ny, e.nx] };
}

/**
 * Reads a box of a raw uint8 cube file [Z, Y, X] (the predicted labels) without loading the rest: one read
 * per slice of the box's rows. Clipped like `readCube`; errors name the file.
 */
export async function readRawBox(
  path: string,
  dims: readonly [number, number, number],
  box: Box = {},
): Promise<CubeBox> {
  const [, Y, X] = dims;
  const e = extent(dims, box, path);
  const out = new Uint8Array(e.nz * e.ny * e.nx), block = new Uint8Array(e.ny * X);
  if (!out.length) return { data: out, shape: [e.nz, e.ny, e.nx] };
  const file = await Deno.open(path, { read: true }).catch((err) => {
    throw new Error(`${path}: cannot open (${(err as Error).message})`);
  });
  try {
    for (let k = 0; k < e.nz; k++) {
      const z = e.z0 + k * e.step;
      await file.seek((z * Y + e.y0) * X, Deno.SeekMode.Start);
      for (let got = 0; got < block.length;) {
        const n = await file.read(block.subarray(got));
        if (n === null) throw new Error(`${path}: truncated (slice ${z})`);
        got += n;
      }
      for (let r = 0; r < e.ny; r++) {
        out.set(block.subarray(r * X + e.x0, r * X + e.x0 + e.nx), (k * e.ny + r) * e.nx);
      }
    }
  } finally {
    file.close();
  }
  return { data: out, shape: [e.nz, e.ny, e.nx] };
}

/**
 * Reads boxes of a cached study without reading its header first: the image cubes by `readCube`, the
 * predicted labels from seg_pred.raw of shape `grid` (null: reading "pred" is an error).
 */
export function cacheBoxReader(
  cache: string,
  uid: string,
  grid: readonly [number, number, number] | null,
): BoxReader {
  const name = `${cache}/${uid}`;
  return {
    name,
    readBox(cube: SourceCube, box: Box = {}): Promise<CubeBox> {
      if (cube === "pred") {
        if (!grid) {
          return Promise.reject(
            new Error(`${name}: no segmentation prediction (seg_meta.json) to read from`),
          );
        }
        return readRawBox(segPaths(cache, uid).raw, [grid[0], grid[1], grid[2]], box);
      }
      if (cube !== "image_full" && cube !== "image_256") {
        return Promise.reject(new Error(`${name}: unknown cube "${cube}"`));
      }
      return readCube(cache, uid, cube, box);
    },
  };
}

/**
 * A cached study as a {@link CubeSource}: header.json, and seg_meta.json for the prediction's shape when
 * there is one (grid null otherwise). The study must have image_full.
 */
export async function openCacheSource(cache: string, uid: string): Promise<CubeSource> {
  const header = await readHeader(cache, uid);
  const full = header.cubes.image_full;
  if (!full) throw new Error(`${cache}/${uid}/header.json: study ${uid} has no image_full cube`);
  const hasPred = await Deno.stat(segPaths(cache, uid).meta).then(() => true, () => false);
  const grid = hasPred ? (await readSegMetaFile(cache, uid)).shape : null;
  return { uid, header, full: [...full], grid: grid && [...grid], ...cacheBoxReader(cache, uid, grid) };
}

/**
 * An in-memory study (infer/study.ts) as a {@link CubeSource}, with its predicted labels when given:
 * `labels` uint8 of `shape` (default [ceil(Z/2), S, S], S the size of image_256).
 */
export function memorySource(
  study: InMemoryStudy,
  pred?: { labels: Uint8Array; shape?: [number, number, number] },
): CubeSource {
  const name = `memory:${study.dir}`;
  const full = study.header.cubes.image_full, small = study.header.cubes.image_256;
  if (!full || !small) throw new Error(`${name}: the study has no image_full or image_256`);
  let grid: [number, number, number] | null = null;
  if (pred) {
    grid = pred.shape ? [...pred.shape] : [Math.ceil(full[0] / 2), small[1], small[2]];
    if (!(pred.labels instanceof Uint8Array) || pred.labels.length !== grid[0] * grid[1] * grid[2]) {
      throw new Error(
        `${name}: predicted labels must be a Uint8Array of [${grid}] (${
          grid[0] * grid[1] * grid[2]
        } values), got ${pred.labels?.length}`,
      );
    }
  }
  const dims = { image_full: full, image_256: small };
  return {
    uid: study.uid,
    header: study.header,
    full: [...full],
    grid,
    name,
    readBox(cube: SourceCube, box: Box = {}): Promise<CubeBox> {
      try {
        if (cube === "pred") {
          if (!pred || !grid) throw new Error(`${name}: no predicted labels were given`);
          return Promise.resolve(sliceBox(pred.labels, grid, box, `${name} pred`));
        }
        if (cube !== "image_full" && cube !== "image_256") throw new Error(`${name}: unknown cube "${cube}"`);
        return Promise.resolve(sliceBox(study[cube], dims[cube], box, `${name} ${cube}`));
      } catch (e) {
        return Promise.reject(e);
      }
    },
  };
}
