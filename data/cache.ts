/**
 * @file The preprocessing cache: per study a folder with raw little-endian cubes and a JSON header,
 * written atomically (a `.partial` folder renamed into place), read back with random access by slice range
 * and box, so that taking a 40-slice crop reads only those bytes.
 *
 *   <cache>/<uid>/header.json
 *   <cache>/<uid>/image_full.raw   [Z, H, W]     stored values (int16 or uint16), slice 0 most cranial
 *   <cache>/<uid>/image_256.raw    [Z, 256, 256] the same resized like cv2 INTER_LINEAR
 *   <cache>/<uid>/mask_256.raw     [Z, 256, 256] uint8 labels as stored in the NIfTI (when there is a mask)
 */

/** Which cube of a study. */
export type CubeName = "image_full" | "image_256" | "mask_256";

/** header.json of a cached study. */
export interface CacheHeader {
  version: 1;
  uid: string;
  units: "stored" | "hu";
  dtype: "int16" | "uint16";
  cubes: Partial<Record<CubeName, [number, number, number]>>;
  /** Voxel size of the full-resolution cube, [z, y, x] mm. */
  spacing: [number, number, number];
  rescale: { slope: number; intercept: number };
  photometric: string;
  /** Mean and std of the 256 cube over all slices (the seed's meta.json image_mean / image_std). */
  mean: number;
  std: number;
  /** Mean and std over slices [::2] (the seed's segmentation-stage normalisation). */
  mean2: number;
  std2: number;
  /**
   * The number in each slice's file name (`<n>.dcm`), by cube slice; null where a name has none. RSNA's
   * train_bounding_boxes.csv names slices by it (`slice_number`). Absent in caches written before it.
   */
  sliceNumbers?: (number | null)[];
}

/** A box to read: half-open ranges; `zStep` 2 reads slices z0, z0+2, ... (the seed's [::2]). */
export interface Box {
  z?: [number, number];
  y?: [number, number];
  x?: [number, number];
  zStep?: number;
}

/** Reads a study's header. */
export async function readHeader(cache: string, uid: string): Promise<CacheHeader> {
  const path = `${cache}/${uid}/header.json`;
  try {
    return JSON.parse(await Deno.readTextFile(path));
  } catch (e) {
    throw new Error(`${path}: study not in the cache or header unreadable (${(e as Error).message})`);
  }
}

/** Whether a study is completely cached. */
export async function isCached(cache: string, uid: string): Promise<boolean> {
  return await Deno.stat(`${cache}/${uid}/header.json`).then(() => true, () => false);
}

/**
 * Reads a box of one cube without loading the rest: one read per (slice, row block). Ranges are clipped to
 * the cube; the result is [nz, ny, nx] in the cube's element type.
 */
export async function readCube(cache: string, uid: string, cube: CubeName, box: Box = {}): Promise<{
  data: Int16Array | Uint16Array | Uint8Array;
  shape: [number, number, number];
}> {
  const h = await readHeader(cache, uid);
  const dims = h.cubes[cube];
  const path = `${cache}/${uid}/${cube}.raw`;
  if (!dims) throw new Error(`${path}: study ${uid} has no ${cube} cube`);
  const [Z, Y, X] = dims;
  const clip = (r: [number, number] | undefined, n: number): [number, number] => {
    const [a, b] = r ?? [0, n];
    return [Math.max(0, Math.min(n, a)), Math.max(0, Math.min(n, b))];
  };
  const [z0, z1] = clip(box.z, Z), [y0, y1] = clip(box.y, Y), [x0, x1] = clip(box.x, X);
  const step = box.zStep ?? 1;
  const nz = Math.max(0, Math.ceil((z1 - z0) / step)), ny = Math.max(0, y1 - y0), nx = Math.max(0, x1 - x0);
  const eb = cube === "mask_256" ? 1 : 2;
  const bytes = new Uint8Array(nz * ny * nx * eb);
  const file = await Deno.open(path, { read: true }).catch((e) => {
    throw new Error(`${path}: cannot open (${(e as Error).message})`);
  });
  try {
    const rowBytes = X * eb;
    const block = new Uint8Array(ny * rowBytes);
    for (let k = 0; k < nz; k++) {
      const z = z0 + k * step;
      await file.seek((z * Y + y0) * rowBytes, Deno.SeekMode.Start);
      let got = 0;
      while (got < block.length) {
        const n = await file.read(block.subarray(got));
        if (n === null) throw new Error(`${path}: truncated (slice ${z})`);
        got += n;
      }
      for (let r = 0; r < ny; r++) {
        bytes.set(block.subarray(r * rowBytes + x0 * eb, r * rowBytes + x1 * eb), ((k * ny) + r) * nx * eb);
      }
    }
  } finally {
    file.close();
  }
  const data = cube === "mask_256"
    ? bytes
    : h.dtype === "int16"
    ? new Int16Array(bytes.buffer)
    : new Uint16Array(bytes.buffer);
  return { data, shape: [nz, ny, nx] };
}

/** The uids of the studies completely cached in `cache` (sorted); an error names the folder if unreadable. */
export async function listCached(cache: string): Promise<string[]> {
  let entries: Deno.DirEntry[];
  try {
    entries = await Array.fromAsync(Deno.readDir(cache));
  } catch (e) {
    throw new Error(`${cache}: cannot read the cache (${(e as Error).message})`);
  }
  const out: string[] = [];
  for (const e of entries) {
    if (e.isDirectory && !e.name.includes(".partial") && await isCached(cache, e.name)) out.push(e.name);
  }
  return out.sort();
}
