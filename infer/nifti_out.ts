/**
 * @file Predicted labels back onto the CT: the segmentation predicts on the seed's grid (slices [::2] of the
 * 256 cube, [ceil(Z/2), 256, 256]); `labelsToNifti` maps them onto the study's original [Z, H, W] grid (the
 * inverse of the seed's mapping: original slice z takes predicted slice floor(z/2); in plane G -> H x W
 * nearest, cv2 INTER_NEAREST) and then into an RSNA-layout NIfTI with the series' affine (data/nifti.ts
 * `volumeToNifti`, the layout dcm2niix writes), so that the file overlays the DICOM series in viewers
 * (3D Slicer, ITK-SNAP) and reads back with `niftiToVolume`.
 */
import { type NiftiVolume, volumeToNifti, writeNifti } from "../data/nifti.ts";
import { resizeNearestIndex } from "../data/augment/cv.ts";
import type { SeriesGeometry } from "./study.ts";

type Shape3 = [number, number, number];

function checkShape(s: readonly number[], what: string): Shape3 {
  if (!Array.isArray(s) || s.length !== 3 || s.some((d) => !Number.isInteger(d) || d < 1)) {
    throw new Error(`labelsToNifti: ${what} must be 3 positive integers, got [${s}]`);
  }
  return [s[0], s[1], s[2]];
}

/**
 * Predicted labels `pred` of shape `predShape` (default [ceil(Z/2), 256, 256]) on the original grid
 * `fullShape` [Z, H, W]: out[z] = pred[floor(z / 2)] resized to H x W like cv2.resize INTER_NEAREST.
 */
export function upsampleLabels(
  pred: Uint8Array,
  fullShape: readonly [number, number, number],
  predShape?: readonly [number, number, number],
): Uint8Array {
  const [Z, H, W] = checkShape(fullShape, "fullShape");
  const [Z2, G, GW] = checkShape(predShape ?? [Math.ceil(Z / 2), 256, 256], "predShape");
  if (!(pred instanceof Uint8Array) || pred.length !== Z2 * G * GW) {
    throw new Error(
      `labelsToNifti: predicted labels must be a Uint8Array of [${Z2},${G},${GW}], got ${
        (pred as Uint8Array)?.length
      } values`,
    );
  }
  if (Z2 !== Math.ceil(Z / 2)) {
    throw new Error(`labelsToNifti: ${Z2} predicted slices for ${Z} original ones (needs ceil(Z / 2))`);
  }
  const idx = resizeNearestIndex(G, GW, H, W), plane = H * W, out = new Uint8Array(Z * plane);
  for (let z2 = 0; z2 < Z2; z2++) {
    const src = z2 * G * GW, dst = 2 * z2 * plane;
    for (let i = 0; i < plane; i++) out[dst + i] = pred[src + idx[i]];
    // Original slice 2 z2 + 1 comes from the same predicted slice.
    if (2 * z2 + 1 < Z) out.copyWithin(dst + plane, dst, dst + plane);
  }
  return out;
}

/** The geometry of the series, or anything carrying it (an `InMemoryStudy`). */
export type GeometrySource = SeriesGeometry | { geometry: SeriesGeometry };

function geometryOf(g: GeometrySource): SeriesGeometry {
  const geo = "geometry" in g ? g.geometry : g;
  if (!geo || !Array.isArray(geo.shape) || !Array.isArray(geo.direction)) {
    throw new Error("labelsToNifti: needs the series geometry (shape, spacing, origin, direction)");
  }
  return geo;
}

/**
 * The predicted labels as a NIfTI volume over the study's CT: upsampled to `fullShape` (default: the
 * series' shape, which it must equal) by {@link upsampleLabels}, then in the RSNA layout with the
 * voxel-to-RAS affine of the series (what `volumeToNifti` gives; `niftiToVolume` of it returns the
 * upsampled labels). `series` is its geometry or an `InMemoryStudy`.
 */
export function labelsToNifti(
  pred: Uint8Array,
  series: GeometrySource,
  fullShape?: readonly [number, number, number],
  predShape?: readonly [number, number, number],
): NiftiVolume {
  const geometry = geometryOf(series);
  const shp = checkShape(fullShape ?? geometry.shape, "fullShape");
  if (geometry.shape.join() !== shp.join()) {
    throw new Error(`labelsToNifti: fullShape [${shp}] is not the series' shape [${geometry.shape}]`);
  }
  return volumeToNifti(upsampleLabels(pred, shp, predShape), geometry);
}

/**
 * Writes {@link labelsToNifti} to `path` (.nii.gz compressed, or .nii), atomically (a temporary file
 * renamed into place); returns the volume written.
 */
export async function writeLabelsNifti(
  path: string,
  pred: Uint8Array,
  series: GeometrySource,
  fullShape?: readonly [number, number, number],
  predShape?: readonly [number, number, number],
): Promise<NiftiVolume> {
  if (!path.endsWith(".nii") && !path.endsWith(".nii.gz")) {
    throw new Error(`${path}: a NIfTI output path must end in .nii or .nii.gz`);
  }
  const vol = labelsToNifti(pred, series, fullShape, predShape);
  await writeNifti(path, vol);
  return vol;
}
