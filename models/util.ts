/**
 * @file Small helpers shared by the models.
 */
import type { Tensor } from "../core/tensor.ts";
import { cat } from "../kernels/slice.ts";

/** A 1-channel input repeated to 3 channels (to reuse RGB-pretrained stems), as the seed does; others unchanged. */
export function repeatChannels(x: Tensor): Tensor {
  if (x.ndim !== 5) throw new Error(`expected a 5-D input [N, C, D, H, W], got [${x.shape}]`);
  if (x.shape[1] === 3) return x;
  if (x.shape[1] !== 1) throw new Error(`expected 1 or 3 input channels, got [${x.shape}]`);
  return cat([x, x, x], 1);
}
