/**
 * @file How the optimizer-side multi-tensor kernels (AdamW's update, the GradScaler's unscale) group tensors
 * into dispatches.
 */
import type { Tensor } from "../core/tensor.ts";

/**
 * Splits `items` into dispatches of at most `per` (at least 1); an item whose tensor is larger than one
 * storage binding (so bound in several windows, each a binding of its own) goes alone. Order is kept.
 */
export function dispatchChunks<T>(items: T[], per: number, tensorOf: (item: T) => Tensor): T[][] {
  const out: T[][] = [];
  if (!items.length) return out;
  const cap = tensorOf(items[0]).device.bindingCap;
  const n = Math.max(1, per);
  let cur: T[] = [];
  for (const it of items) {
    if (tensorOf(it).numel() * 4 > cap) {
      out.push([it]);
      continue;
    }
    cur.push(it);
    if (cur.length === n) out.push(cur), cur = [];
  }
  if (cur.length) out.push(cur);
  return out;
}
