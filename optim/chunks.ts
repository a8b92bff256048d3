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

/**
 * A multi-tensor kernel's index split: uniforms `e<k>` (the end of tensor k in the chunk's concatenation, in
 * units of `unit` elements: 4 for vec4 access), the total `n` to launch over, and WGSL that runs `body(k)` for
 * the element `gid` of tensor k, with `j` its index within that tensor (it depends only on the sizes' count).
 */
export function concatIndex(
  sizes: number[],
  body: (k: number) => string,
  unit = 1,
): { uniforms: Record<string, number>; n: number; wgsl: () => string } {
  const uniforms: Record<string, number> = {};
  let n = 0;
  sizes.forEach((s, k) => uniforms[`e${k}`] = n += s / unit);
  // A function: the source is kept by the kernels' keys, so the text is generated only the first time.
  const wgsl = () =>
    sizes.map((_, k) =>
      `${k ? " else " : "  "}if (gid < sh.e${k}) {
    let j = gid${k ? ` - sh.e${k - 1}` : ""};
    ${body(k)}
  }`
    ).join("");
  return { uniforms, n, wgsl };
}
