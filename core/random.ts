/**
 * @file The process-wide seed of ops that draw random numbers without being given a seed (dropout masks,
 * initialisers): PyTorch's `torch.manual_seed`. Seeding it makes a run reproducible; a trainer re-seeds it
 * from (run seed, step) before every step so a resumed run draws the same masks as an uninterrupted one.
 */

let state = (Math.random() * 2 ** 32) >>> 0;

/** Sets the process-wide seed. */
export function manualSeed(seed: number): void {
  state = seed >>> 0;
}

/** The next 32-bit seed from the process-wide generator (a Weyl sequence, hashed). */
export function nextSeed(): number {
  state = (state + 0x9e3779b9) >>> 0;
  return hash32(state);
}

/** Mixes integers into one well-spread 32-bit value (for deriving seeds from run seed, epoch, step, ...). */
export function hash32(...xs: number[]): number {
  let h = 0x811c9dc5;
  for (const x of xs) {
    h = Math.imul(h ^ (x >>> 0), 0x01000193) >>> 0;
    h ^= h >>> 15;
    h = Math.imul(h, 0x2c1b3c6d) >>> 0;
    h ^= h >>> 12;
  }
  return h >>> 0;
}

/** mulberry32: a small, fast generator of floats in [0, 1) from a 32-bit seed. */
export function mulberry32(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
