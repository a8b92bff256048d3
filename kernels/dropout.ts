/**
 * @file Dropout with a counter-based mask: the mask is a hash of (seed, element index), so the backward
 * recomputes it instead of storing it.
 */
import { Tensor } from "../core/tensor.ts";
import { record } from "../core/autograd.ts";
import { nextSeed } from "../core/random.ts";
import { launch1d, params } from "./codegen.ts";
import { RNG_WGSL } from "./creation.ts";

/** Options of {@link dropout}. */
export interface DropoutOptions {
  /** Drop only in training (default true); in eval the input is returned unchanged. */
  training?: boolean;
  /** 32-bit seed of the mask (default: the next seed of the process-wide generator, see `manualSeed`). */
  seed?: number;
}

function masked(op: string, x: Tensor, p: number, seed: number): Tensor {
  const y = Tensor.empty(x.device, x.shape, "f32", op);
  launch1d({
    op,
    args: [{ name: "x", t: x }, { name: "y", t: y, write: true }],
    n: x.numel(),
    params: params(seed, { f: p }, { f: 1 / (1 - p) }),
    decls: RNG_WGSL,
    body: `  y_st(gid, select(0.0, x_ld(gid) * pf(2u), rnd_f32(gid, pu(0u), 3u) >= pf(1u)));`,
  });
  return y;
}

/** Zeroes each element with probability p and scales the rest by 1/(1-p) (inverted dropout). */
export function dropout(x: Tensor, p: number, opts: DropoutOptions = {}): Tensor {
  const op = "F.dropout";
  x.storage(op);
  if (!(p >= 0 && p < 1)) throw new Error(`${op}: p must be in [0, 1), got ${p}`);
  if (x.dtype !== "f32") throw new Error(`${op}: expects f32, got ${x.describe()}`);
  if (!(opts.training ?? true) || p === 0) return x.reshape(x.shape);
  const seed = (opts.seed ?? nextSeed()) >>> 0;
  const y = masked(op, x, p, seed);
  return record(op, y, [x], [], (g) => [masked(`${op}.backward`, g, p, seed)]);
}
