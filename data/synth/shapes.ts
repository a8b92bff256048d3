/**
 * @file Signed-distance shapes of the phantoms, in millimetres: negative inside, positive outside, exact or
 * close to the Euclidean distance near the surface (what partial volume and cortical thickness need), and
 * an axis-aligned bound for each so that rasterisation visits only the voxels near a shape.
 */

/** A point or direction [x, y, z] in millimetres. */
export type Vec3 = [number, number, number];

/** A 3x3 rotation, row-major: world = R * local. */
export type Mat3 = [number, number, number, number, number, number, number, number, number];

/** An axis-aligned box [min, max]. */
export type Bounds = [Vec3, Vec3];

/** One shape: its distance function and its bound (both in the frame it was made in). */
export interface Shape {
  sdf(x: number, y: number, z: number): number;
  bounds: Bounds;
}

/** Rotation about x (sagittal tilt), y (coronal tilt) and z (axial rotation), applied in that order. */
export function rotation(ax: number, ay: number, az: number): Mat3 {
  const [cx, sx, cy, sy, cz, sz] = [
    Math.cos(ax),
    Math.sin(ax),
    Math.cos(ay),
    Math.sin(ay),
    Math.cos(az),
    Math.sin(az),
  ];
  // Rz * Ry * Rx
  return [
    cz * cy,
    cz * sy * sx - sz * cx,
    cz * sy * cx + sz * sx,
    sz * cy,
    sz * sy * sx + cz * cx,
    sz * sy * cx - cz * sx,
    -sy,
    cy * sx,
    cy * cx,
  ];
}

/** R * v. */
export function apply(r: Mat3, v: Vec3): Vec3 {
  return [
    r[0] * v[0] + r[1] * v[1] + r[2] * v[2],
    r[3] * v[0] + r[4] * v[1] + r[5] * v[2],
    r[6] * v[0] + r[7] * v[1] + r[8] * v[2],
  ];
}

/** Ellipsoid with centre `c` and semi-axes `r` (distance scaled by the smallest axis: exact on spheres). */
export function ellipsoid(c: Vec3, r: Vec3): Shape {
  const m = Math.min(r[0], r[1], r[2]);
  return {
    sdf(x, y, z) {
      const a = (x - c[0]) / r[0], b = (y - c[1]) / r[1], d = (z - c[2]) / r[2];
      return (Math.sqrt(a * a + b * b + d * d) - 1) * m;
    },
    bounds: [[c[0] - r[0], c[1] - r[1], c[2] - r[2]], [c[0] + r[0], c[1] + r[1], c[2] + r[2]]],
  };
}

/** A rod of radius `rad` from `a` to `b` with round ends; `squash` scales its thickness along z. */
export function capsule(a: Vec3, b: Vec3, rad: number, squash = 1): Shape {
  const d: Vec3 = [b[0] - a[0], b[1] - a[1], (b[2] - a[2]) / squash];
  const dd = d[0] * d[0] + d[1] * d[1] + d[2] * d[2] || 1;
  const rz = rad * squash;
  return {
    sdf(x, y, z) {
      const px = x - a[0], py = y - a[1], pz = (z - a[2]) / squash;
      const t = Math.max(0, Math.min(1, (px * d[0] + py * d[1] + pz * d[2]) / dd));
      const qx = px - t * d[0], qy = py - t * d[1], qz = pz - t * d[2];
      return Math.sqrt(qx * qx + qy * qy + qz * qz) - rad;
    },
    bounds: [
      [Math.min(a[0], b[0]) - rad, Math.min(a[1], b[1]) - rad, Math.min(a[2], b[2]) - rz],
      [Math.max(a[0], b[0]) + rad, Math.max(a[1], b[1]) + rad, Math.max(a[2], b[2]) + rz],
    ],
  };
}

/**
 * A vertebral body: a super-elliptic cylinder (half widths `hx`, `hy`, exponent `p` ~2.5: the rounded-square
 * section of a body) between z = `c.z - hz` and `c.z + hz`. `wedge` in [0, 1) lowers the top endplate at the
 * anterior edge (y = c.y - hy) by that fraction of the height, tapering to nothing posteriorly: a compression
 * fracture.
 */
export function body(c: Vec3, hx: number, hy: number, hz: number, p = 2.5, wedge = 0): Shape {
  const m = Math.min(hx, hy);
  return {
    sdf(x, y, z) {
      const u = Math.abs(x - c[0]) / hx, v = Math.abs(y - c[1]) / hy;
      const n = Math.pow(Math.pow(u, p) + Math.pow(v, p), 1 / p);
      const dxy = (n - 1) * m;
      // Anterior (y < c.y) loses up to wedge * 2hz of its top.
      const ant = Math.max(0, Math.min(1, (c[1] - y) / hy * 0.5 + 0.5));
      const top = c[2] - hz + wedge * 2 * hz * ant;
      const dz = Math.max(top - z, z - (c[2] + hz));
      if (dxy > 0 && dz > 0) return Math.sqrt(dxy * dxy + dz * dz);
      return Math.max(dxy, dz);
    },
    bounds: [[c[0] - hx, c[1] - hy, c[2] - hz], [c[0] + hx, c[1] + hy, c[2] + hz]],
  };
}

/** A vertical hole of radius `rad` through everything (a foramen), for {@link subtract}. */
export function column(c: Vec3, rad: number): (x: number, y: number, z: number) => number {
  return (x, y) => Math.hypot(x - c[0], y - c[1]) - rad;
}

/** `s` with `hole` removed (the distance is a bound, exact away from the rim). */
export function subtract(s: Shape, hole: (x: number, y: number, z: number) => number): Shape {
  return { sdf: (x, y, z) => Math.max(s.sdf(x, y, z), -hole(x, y, z)), bounds: s.bounds };
}

/** Rods through a polyline (an arch, a rib, the mandible): `pts` joined by capsules of radius `rad`. */
export function polyline(pts: Vec3[], rad: number, squash = 1): Shape[] {
  const out: Shape[] = [];
  for (let i = 0; i + 1 < pts.length; i++) out.push(capsule(pts[i], pts[i + 1], rad, squash));
  return out;
}

/** Points along an elliptic arc in a plane z = const: centre, semi-axes, angles (radians, 0 = +x, pi/2 = +y). */
export function arc(c: Vec3, ax: number, ay: number, from: number, to: number, n: number): Vec3[] {
  return Array.from({ length: n }, (_, i) => {
    const t = from + (to - from) * i / (n - 1);
    return [c[0] + ax * Math.cos(t), c[1] + ay * Math.sin(t), c[2]] as Vec3;
  });
}

/** The union of the bounds of `shapes`, grown by `pad` mm. */
export function unionBounds(shapes: Shape[], pad = 0): Bounds {
  const lo: Vec3 = [Infinity, Infinity, Infinity], hi: Vec3 = [-Infinity, -Infinity, -Infinity];
  for (const s of shapes) {
    for (let k = 0; k < 3; k++) {
      lo[k] = Math.min(lo[k], s.bounds[0][k] - pad);
      hi[k] = Math.max(hi[k], s.bounds[1][k] + pad);
    }
  }
  return [lo, hi];
}
