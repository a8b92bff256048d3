/**
 * @file The seed's segmentation validation metric (seed spec 2.5): per class c = 1..7 a binary prediction
 * (mean softmax probability > 0.5) against the ground truth, scored only on studies whose truth has more than
 * 10 voxels of c; dice = (2I + 1e-5) / (|P| + |G| + 1e-5), taken as 1 when |P| + |G| < 64; averaged over
 * studies per class, then over the classes that were scored.
 */

/** Number of foreground classes (C1..C7). */
const CLASSES = 7;
const EPS = 1e-5;

/** Accumulates the seed's per-class dice over studies. */
export class DiceMeter {
  #sum = new Float64Array(CLASSES + 1);
  #count = new Int32Array(CLASSES + 1);

  /**
   * Adds one study: `above` has bit c set where class c is predicted (predictVolume's `above`), `truth`
   * holds raw labels (values above 7, the thoracic vertebrae, count as background).
   */
  add(above: Uint8Array, truth: Uint8Array): void {
    if (!(above instanceof Uint8Array) || !(truth instanceof Uint8Array)) {
      throw new Error("DiceMeter.add: above and truth must be Uint8Arrays");
    }
    if (above.length !== truth.length) {
      throw new Error(`DiceMeter.add: above has ${above.length} voxels, truth ${truth.length}`);
    }
    const P = new Float64Array(CLASSES + 1),
      G = new Float64Array(CLASSES + 1),
      I = new Float64Array(CLASSES + 1);
    for (let i = 0; i < truth.length; i++) {
      const t = truth[i], b = above[i];
      if (t >= 1 && t <= CLASSES) {
        G[t]++;
        if (b & (1 << t)) I[t]++;
      }
      if (b > 1) { for (let c = 1; c <= CLASSES; c++) if (b & (1 << c)) P[c]++; }
    }
    for (let c = 1; c <= CLASSES; c++) {
      if (G[c] <= 10) continue;
      this.#sum[c] += P[c] + G[c] < 64 ? 1 : (2 * I[c] + EPS) / (P[c] + G[c] + EPS);
      this.#count[c]++;
    }
  }

  /** Studies scored so far per class (C1..C7). */
  get counts(): number[] {
    return Array.from(this.#count.subarray(1));
  }

  /**
   * Mean dice per class (null for a class no study scored) and their mean over the scored classes (NaN
   * when none was), as the seed's validator reports it.
   */
  compute(): { dice: number; perClass: (number | null)[] } {
    const perClass: (number | null)[] = [];
    for (let c = 1; c <= CLASSES; c++) perClass.push(this.#count[c] ? this.#sum[c] / this.#count[c] : null);
    const scored = perClass.filter((v): v is number => v !== null);
    return { dice: scored.length ? scored.reduce((a, b) => a + b, 0) / scored.length : NaN, perClass };
  }

  /** Forgets every study added. */
  reset(): void {
    this.#sum.fill(0);
    this.#count.fill(0);
  }
}

/**
 * Per level C1..C7 the dice of a predicted label volume against the ground truth on the same grid,
 * 2 |P ∩ G| / (|P| + |G|), where truth labels above 7 (the thoracic vertebrae of the RSNA masks) count as
 * background; null for a level neither volume has (nothing to measure). Unlike {@link DiceMeter}, no
 * smoothing, no voxel floors: this is the plain overlap a user reads on a report.
 */
export function levelDice(pred: ArrayLike<number>, truth: ArrayLike<number>): (number | null)[] {
  if (pred.length !== truth.length) {
    throw new Error(`levelDice: prediction has ${pred.length} voxels, truth ${truth.length}`);
  }
  const P = new Float64Array(CLASSES + 1),
    G = new Float64Array(CLASSES + 1),
    I = new Float64Array(CLASSES + 1);
  for (let i = 0; i < pred.length; i++) {
    const p = pred[i] <= CLASSES ? pred[i] : 0, t = truth[i] <= CLASSES ? truth[i] : 0;
    P[p]++;
    G[t]++;
    if (p === t) I[t]++;
  }
  const out: (number | null)[] = [];
  for (let c = 1; c <= CLASSES; c++) out.push(P[c] + G[c] ? (2 * I[c]) / (P[c] + G[c]) : null);
  return out;
}

/** {@link levelDice} over several studies: per level the mean over the studies that measured it. */
export interface DiceSummary {
  /** C1..C7; null for a level no study measured. */
  perLevel: (number | null)[];
  /** Mean of the measured levels (null when none was). */
  mean: number | null;
  /** Studies averaged. */
  studies: number;
}

/** Averages per-study {@link levelDice} results: per level over studies, then over levels. */
export function meanLevelDice(perStudy: (number | null)[][]): DiceSummary {
  const perLevel: (number | null)[] = [];
  for (let c = 0; c < CLASSES; c++) {
    const v = perStudy.map((d) => d[c]).filter((x): x is number => x !== null);
    perLevel.push(v.length ? v.reduce((a, b) => a + b, 0) / v.length : null);
  }
  const m = perLevel.filter((x): x is number => x !== null);
  return {
    perLevel,
    mean: m.length ? m.reduce((a, b) => a + b, 0) / m.length : null,
    studies: perStudy.length,
  };
}
