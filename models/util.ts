/**
 * @file Small helpers shared by the models.
 */
import type { Tensor } from "../core/tensor.ts";

/**
 * Whether `x` is a one-channel image that a stem of `stemChannels` input channels reads as that many identical
 * copies (the seed repeats CT to 3 channels to reuse RGB-pretrained stems): the stem then folds the copies into
 * its weights instead of convolving each (nn.Conv3d's `repeatedInput`). False where the channels match.
 */
export function repeatsToStem(x: Tensor, stemChannels: number): boolean {
  if (x.ndim !== 5) throw new Error(`expected a 5-D input [N, C, D, H, W], got [${x.shape}]`);
  if (x.shape[1] === stemChannels) return false;
  if (x.shape[1] === 1 && stemChannels === 3) return true;
  throw new Error(
    `expected ${stemChannels === 3 ? "1 or 3" : stemChannels} input channels, got [${x.shape}]`,
  );
}
