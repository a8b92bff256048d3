/**
 * @file A picture of a phantom's anatomy: a mid-sagittal and a coronal view through the spine and axial
 * slices through C1, C2, C4, C7 and T1, each in a soft-tissue window beside a bone window with the mask's
 * labels over it (C1..C7 in the report's colours, T1/T2 white), isotropic in millimetres. A person checks
 * a generator by looking, not by reading voxel counts.
 */
import type { PhantomStudy } from "../data/synth.ts";
import { encodePng } from "../infer/png.ts";
import { LABEL_COLORS } from "../infer/report.ts";

type Rgb = { w: number; h: number; px: Uint8Array };

function windowed(v: number, level: number, width: number): number {
  return Math.max(0, Math.min(255, Math.round(((v - level) / width + 0.5) * 255)));
}

/** A 2-D view: `at(u, v)` gives the voxel index of pixel (u, v) or -1. */
function view(
  st: PhantomStudy,
  w: number,
  h: number,
  at: (u: number, v: number) => number,
  labels: boolean,
): Rgb {
  const px = new Uint8Array(w * h * 3);
  for (let v = 0; v < h; v++) {
    for (let u = 0; u < w; u++) {
      const i = at(u, v), o = (v * w + u) * 3;
      if (i < 0) continue;
      const hu = st.hu[i];
      const g = labels ? windowed(hu, 400, 1800) : windowed(hu, 50, 400);
      let c = [g, g, g];
      const l = st.labels[i];
      if (labels && l) {
        const lc = l <= 7 ? LABEL_COLORS[l] : [255, 255, 255];
        c = c.map((x, k) => Math.round(0.55 * x + 0.45 * lc[k]));
      }
      px.set(c, o);
    }
  }
  return { w, h, px };
}

/**
 * The views of a phantom side by side (soft-tissue window above, bones with labels below), as PNG bytes,
 * each pixel drawn `scale` x `scale` times.
 */
export async function phantomPreview(st: PhantomStudy, scale = 2): Promise<Uint8Array> {
  const [Z, Y, X] = st.shape, [dz, dy] = st.spacing;
  const c4 = st.centres.C4;
  const xs = Math.round(Math.max(0, Math.min(X - 1, c4[2])));
  const ys = Math.round(Math.max(0, Math.min(Y - 1, c4[1])));
  const H = Math.round((Z * dz) / dy); // sagittal/coronal height in in-plane pixels
  const zOf = (v: number) => Math.min(Z - 1, Math.floor((v * dy) / dz));
  const idx = (z: number, y: number, x: number) => (z * Y + y) * X + x;
  const panels: [(l: boolean) => Rgb][] = [
    [(l) => view(st, Y, H, (u, v) => idx(zOf(v), u, xs), l)],
    [(l) => view(st, X, H, (u, v) => idx(zOf(v), ys, u), l)],
  ];
  for (const name of ["C1", "C2", "C4", "C7", "T1"]) {
    const z = Math.round(st.centres[name][0]);
    if (z < 0 || z >= Z) continue;
    panels.push([(l) => view(st, X, Y, (u, v) => idx(z, v, u), l)]);
  }
  const rows = [false, true].map((l) => panels.map(([f]) => f(l)));
  const W = rows[0].reduce((s, p) => s + p.w + 4, 0), rowH = Math.max(H, Y);
  const out = new Uint8Array(W * rowH * 2 * 3);
  rows.forEach((row, r) => {
    let x0 = 0;
    for (const p of row) {
      for (let v = 0; v < p.h; v++) {
        out.set(p.px.subarray(v * p.w * 3, (v + 1) * p.w * 3), ((r * rowH + v) * W + x0) * 3);
      }
      x0 += p.w + 4;
    }
  });
  const H2 = rowH * 2, big = new Uint8Array(W * scale * H2 * scale * 3);
  for (let y = 0; y < H2 * scale; y++) {
    for (let x = 0; x < W * scale; x++) {
      const i = ((Math.floor(y / scale) * W) + Math.floor(x / scale)) * 3;
      big.set(out.subarray(i, i + 3), (y * W * scale + x) * 3);
    }
  }
  return await encodePng(big, W * scale, H2 * scale, 3);
}
