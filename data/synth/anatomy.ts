/**
 * @file The bones of a phantom neck, each in its own frame (x: patient left-right, y: anterior (-) to
 * posterior (+), z: cranial (-) to caudal (+), millimetres, origin at the body's centre): C1 (the atlas:
 * anterior arch with its tubercle, lateral masses, posterior arch, transverse processes with foramina, no
 * body), C2 (the axis: body, dens rising into the atlas ring, pars, lamina, a large bifid spinous process),
 * C3-C6 (bodies growing caudally with uncinate processes, pedicles, articular pillars, laminae, transverse
 * processes with foramina, bifid spinous processes), C7 (a long single spinous process, larger transverse
 * processes), T1 and T2 (thoracic, labelled 8 and 9 as in the RSNA masks) with the first ribs, and the
 * unlabelled landmarks: skull base with the occipital condyles, mandible, hyoid.
 *
 * Sizes are those of an average adult from the morphometry literature (e.g. body widths 16 mm at C3 to
 * 24 mm at C7, depths 15-17 mm, heights 14-15 mm, discs 4-6 mm, canal 15-17 mm deep and 23-26 mm wide, C1
 * ring about 45 x 80 mm with its transverse processes, dens about 10 mm thick and 15 mm tall); a patient
 * scale multiplies them all.
 */
import {
  arc,
  body,
  capsule,
  column,
  ellipsoid,
  polyline,
  type Shape,
  subtract,
  type Vec3,
} from "./shapes.ts";

/** A named piece of bone (where fractures are placed). */
export interface Part {
  name: string;
  shape: Shape;
}

/** The body sizes of a level: half width (x), half depth (y), half height (z). */
interface Dims {
  hw: number;
  hd: number;
  hh: number;
}

/** Body half sizes of C2..T2 (mm). */
export const BODY: Record<string, Dims> = {
  C2: { hw: 8.5, hd: 8, hh: 10 },
  C3: { hw: 8, hd: 7.5, hh: 7 },
  C4: { hw: 8.5, hd: 7.7, hh: 7 },
  C5: { hw: 9.3, hd: 8, hh: 7 },
  C6: { hw: 10.5, hd: 8.2, hh: 7 },
  C7: { hw: 12, hd: 8.5, hh: 7.5 },
  T1: { hw: 13.5, hd: 9, hh: 8.5 },
  T2: { hw: 14, hd: 10, hh: 9 },
};

/** Spinous process length (mm) and whether its tip is bifid, C3..T2. */
const SPINOUS: Record<string, [number, boolean]> = {
  C3: [11, true],
  C4: [12, true],
  C5: [13, true],
  C6: [16, true],
  C7: [27, false],
  T1: [28, false],
  T2: [26, false],
};

/** C1, the atlas: a ring around the dens (origin on the dens axis, mid-height of the lateral masses). */
export function atlas(): Part[] {
  const foramen = (s: number) => column([s * 23, 1, 0], 3);
  return [
    ...polyline(arc([0, 0, -1], 12.5, 10, Math.PI * 1.12, Math.PI * 1.88, 6), 3, 1.3).map((shape) => ({
      name: "anterior arch",
      shape,
    })),
    { name: "anterior tubercle", shape: ellipsoid([0, -11, -1], [4, 3, 5]) },
    { name: "lateral mass L", shape: ellipsoid([-14, 1, 0], [7, 9, 7]) },
    { name: "lateral mass R", shape: ellipsoid([14, 1, 0], [7, 9, 7]) },
    ...polyline(arc([0, 9, 1], 15, 20, Math.PI * 0.05, Math.PI * 0.95, 8), 2.8, 1.4).map((shape) => ({
      name: "posterior arch",
      shape,
    })),
    { name: "posterior tubercle", shape: ellipsoid([0, 29.5, 1], [4, 3, 4]) },
    { name: "transverse process L", shape: subtract(capsule([-18, 0, 0], [-34, 2, 1], 4), foramen(-1)) },
    { name: "transverse process R", shape: subtract(capsule([18, 0, 0], [34, 2, 1], 4), foramen(1)) },
  ];
}

/** C2, the axis: body, dens, superior articular facets, pars, lamina, the large bifid spinous process. */
export function axis(): Part[] {
  const d = BODY.C2;
  const parts: Part[] = [
    { name: "body", shape: body([0, 0, 0], d.hw, d.hd, d.hh) },
    { name: "dens", shape: capsule([0, -1, -d.hh + 1], [0, -1, -d.hh - 16], 5) },
  ];
  for (const s of [-1, 1]) {
    const side = s < 0 ? "L" : "R";
    parts.push(
      { name: `lateral mass ${side}`, shape: ellipsoid([s * 12, 1, -7], [7, 8, 4]) },
      { name: `pedicle ${side}`, shape: capsule([s * 8, 6, -2], [s * 13, 15, 3], 4) },
      { name: `inferior facet ${side}`, shape: ellipsoid([s * 13.5, 16, 8], [5, 6, 4]) },
      { name: `lamina ${side}`, shape: capsule([s * 13, 17, 5], [s * 1.5, 27, 6], 3.5) },
      {
        name: `transverse process ${side}`,
        shape: subtract(capsule([s * 11, 0, 0], [s * 22, 3, 2], 3.5), column([s * 15, 2, 0], 2.5)),
      },
    );
  }
  parts.push(
    { name: "spinous process", shape: capsule([0, 26, 6], [0, 39, 11], 5) },
    { name: "spinous tip L", shape: ellipsoid([-5, 41, 12], [4, 4, 5]) },
    { name: "spinous tip R", shape: ellipsoid([5, 41, 12], [4, 4, 5]) },
  );
  return parts;
}

/** A subaxial or upper thoracic vertebra (C3..T2) by name. */
export function subaxial(name: string): Part[] {
  const d = BODY[name];
  const [spLen, bifid] = SPINOUS[name];
  const thoracic = name.startsWith("T");
  const cw = thoracic ? 10 : 12; // canal half width
  const cd = thoracic ? 14 : 15.5; // canal depth
  const back = d.hd + cd + 2; // where the laminae meet
  const parts: Part[] = [{ name: "body", shape: body([0, 0, 0], d.hw, d.hd, d.hh) }];
  for (const s of [-1, 1]) {
    const side = s < 0 ? "L" : "R";
    if (!thoracic) {
      parts.push({
        name: `uncinate ${side}`,
        shape: ellipsoid([s * (d.hw - 1.5), 1, -d.hh - 1], [1.6, d.hd * 0.4, 2.3]),
      });
    }
    parts.push(
      {
        name: `pedicle ${side}`,
        shape: capsule([s * (d.hw - 2.5), d.hd - 1, -1], [s * (cw + 2), d.hd + 5, 0], 3),
      },
      { name: `pillar ${side}`, shape: ellipsoid([s * (cw + 5), d.hd + 8, 1], [5.5, 6.5, d.hh + 1]) },
      { name: `lamina ${side}`, shape: capsule([s * (cw + 4), d.hd + 11, 2], [s * 2, back, 3], 2.5, 1.6) },
    );
    if (name === "C7") {
      const tp = subtract(
        capsule([s * (d.hw + 1), 3, 0], [s * (d.hw + 20), 5, 2], 4.2),
        column([s * (d.hw + 4), 3, 0], 1.8),
      );
      parts.push({ name: `transverse process ${side}`, shape: tp });
    } else if (thoracic) {
      parts.push({
        name: `transverse process ${side}`,
        shape: capsule([s * (cw + 5), d.hd + 8, 0], [s * (cw + 22), d.hd + 10, 2], 5),
      });
    } else {
      const tp = subtract(
        ellipsoid([s * (d.hw + 7), d.hd - 1, 0], [7.5, 5.5, 4]),
        column([s * (d.hw + 5), d.hd - 1, 0], 2.8),
      );
      parts.push({ name: `transverse process ${side}`, shape: tp });
    }
  }
  // The spinous process points back and down.
  const tip: Vec3 = [0, back + spLen, 3 + spLen * 0.45];
  parts.push({ name: "spinous process", shape: capsule([0, back, 3], tip, 2.8, 1.5) });
  if (bifid) {
    parts.push(
      { name: "spinous tip L", shape: ellipsoid([-3.5, tip[1] + 1, tip[2]], [2.8, 2.8, 3.5]) },
      { name: "spinous tip R", shape: ellipsoid([3.5, tip[1] + 1, tip[2]], [2.8, 2.8, 3.5]) },
    );
  } else parts.push({ name: "spinous tip", shape: ellipsoid([0, tip[1] + 1, tip[2]], [4.5, 4.5, 5]) });
  return parts;
}

/** The first ribs, from T1's transverse processes curving forward and down (in T1's frame). */
export function firstRibs(): Part[] {
  const out: Part[] = [];
  for (const s of [-1, 1]) {
    const pts: Vec3[] = [[s * 30, 18, 2], [s * 45, 8, 8], [s * 52, -12, 16], [s * 47, -35, 26], [
      s * 32,
      -52,
      34,
    ]];
    for (const shape of polyline(pts, 4.5, 1.3)) out.push({ name: `first rib ${s < 0 ? "L" : "R"}`, shape });
  }
  return out;
}

/** The skull base above the atlas (in C1's frame): occipital condyles, clivus, occiput, mastoids. */
export function skullBase(): Part[] {
  const magnum = column([0, 14, 0], 17);
  const occiput: Shape = {
    // A bowl: the shell between two ellipsoids, below the scan's top and behind the foramen magnum's front.
    sdf(x, y, z) {
      const outer = ellipsoid([0, 20, -50], [62, 70, 42]).sdf(x, y, z);
      const inner = ellipsoid([0, 20, -50], [56, 64, 36]).sdf(x, y, z);
      return Math.max(outer, -inner, -magnum(x, y, z), -(y + 2));
    },
    bounds: [[-62, -2, -92], [62, 90, -8]],
  };
  return [
    { name: "occipital condyle L", shape: ellipsoid([-14, 2, -11.5], [6, 10, 4.5]) },
    { name: "occipital condyle R", shape: ellipsoid([14, 2, -11.5], [6, 10, 4.5]) },
    { name: "clivus", shape: capsule([0, -6, -14], [0, -24, -42], 7) },
    { name: "occiput", shape: occiput },
    { name: "mastoid L", shape: ellipsoid([-44, 8, -22], [8, 11, 13]) },
    { name: "mastoid R", shape: ellipsoid([44, 8, -22], [8, 11, 13]) },
  ];
}

/** The mandible (in C2's frame, moved by the caller with the head): body, angles and rami. */
export function mandible(): Part[] {
  const out: Part[] = [];
  for (const z of [4, 10, 16]) {
    // The anterior half of an ellipse: the U opening backwards.
    const pts = arc([0, -22, z], 44, 52, Math.PI * 0.98, Math.PI * 2.02, 9);
    for (const shape of polyline(pts, 4.2)) out.push({ name: "mandible", shape });
  }
  for (const s of [-1, 1]) {
    out.push({ name: "ramus", shape: capsule([s * 44, -20, 14], [s * 46, -12, -22], 5) });
  }
  return out;
}

/** The hyoid bone (in C3's frame): a small U in front of the airway. */
export function hyoid(): Part[] {
  return polyline(arc([0, -30, 6], 18, 14, Math.PI * 1.05, Math.PI * 1.95, 7), 2.2).map((shape) => ({
    name: "hyoid",
    shape,
  }));
}
