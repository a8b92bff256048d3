/**
 * @file Pointwise (1x1x1, no padding, one group) convs as GEMMs over channels: y[n] = W (O x C) @ x[n]
 * (C x S). Strided ones first take the strided sample of x (and scatter it back in the input gradient).
 */
import { Tensor } from "../../core/tensor.ts";
import { launch1d } from "../codegen.ts";
import { gemm, type GemmMoments } from "../matmul.ts";
import { type Geo, split3, volUniforms } from "./common.ts";

/** x[:, :, ::sd, ::sh, ::sw] as a new tensor (forward), or its adjoint: scatter into zeros (backward). */
function strided(
  op: string,
  src: Tensor,
  full: readonly number[],
  S: [number, number, number],
  adjoint: boolean,
): Tensor {
  const [N, C, D, H, W] = full;
  const OD = Math.ceil(D / S[0]), OH = Math.ceil(H / S[1]), OW = Math.ceil(W / S[2]);
  const out = Tensor.empty(src.device, adjoint ? full : [N, C, OD, OH, OW], "f32", op);
  const body = adjoint
    ? `  let q = div_xS(gid);
  let r = gid - q * sh.xS;
  ${split3("r", "x", "d", "h", "w")}
  let ok = d % ${S[0]} == 0 && h % ${S[1]} == 0 && w % ${S[2]} == 0;
  let si = q * sh.oS + u32(d / ${S[0]}) * sh.oHW + u32(h / ${S[1]}) * sh.oW + u32(w / ${S[2]});
  out_st(gid, select(0.0, s_ld(min(si, sh.last)), ok));`
    : `  let q = div_oS(gid);
  let r = gid - q * sh.oS;
  ${split3("r", "o", "d", "h", "w")}
  out_st(gid, s_ld(q * sh.xS + u32(d * ${S[0]}) * sh.xHW + u32(h * ${S[1]}) * sh.xW + u32(w * ${S[2]})));`;
  const uniforms = { ...volUniforms("x", D, H, W), ...volUniforms("o", OD, OH, OW), last: src.numel() - 1 };
  if (adjoint && W % 4 === 0 && 4 % S[2] === 0) {
    // A vec4 of the full grid a lane: its components at w % S[2] == 0 are the same for every lane (W and the
    // vec4's start are multiples of 4, which S[2] divides), so only those are loaded (2 of 4 at stride 2).
    const comps = [0, 1, 2, 3].map((i) =>
      i % S[2] === 0 ? `select(0.0, s_ld(min(si + ${i / S[2]}u, sh.last)), ok)` : "0.0"
    );
    launch1d({
      op,
      args: [{ name: "s", t: src }, { name: "out", t: out, write: true, vec4: true }],
      n: out.numel() / 4,
      uniforms,
      body: `  let e = gid * 4u;
  let q = div_xS(e);
  let r = e - q * sh.xS;
  ${split3("r", "x", "d", "h", "w")}
  let ok = d % ${S[0]} == 0 && h % ${S[1]} == 0;
  let si = q * sh.oS + u32(d / ${S[0]}) * sh.oHW + u32(h / ${S[1]}) * sh.oW + u32(w / ${S[2]});
  out_st(gid, vec4<f32>(${comps.join(", ")}));`,
    });
    return out;
  }
  launch1d({
    op,
    args: [{ name: "s", t: src }, { name: "out", t: out, write: true }],
    n: out.numel(),
    uniforms,
    body,
  });
  return out;
}

/**
 * Pointwise forward: bias, `residual` and ReLU are the GEMM's epilogue (applied as it stores), and so are
 * the output's per-channel `moments` when asked. Returns the
 * output and the (strided sample of the) input that the gradients need: `x` itself at stride 1, else a new
 * tensor the caller disposes once it is saved.
 */
export function pointwiseForward(
  op: string,
  x: Tensor,
  w: Tensor,
  b: Tensor | null,
  g: Geo,
  residual: Tensor | null = null,
  moments: GemmMoments | null = null,
): { y: Tensor; xs: Tensor } {
  const { N, C, O, OD, OH, OW, S } = g;
  const OS = OD * OH * OW;
  const xs = S.every((s) => s === 1) ? x : strided(op, x, x.shape, S, false);
  const w2 = w.reshape([O, C]);
  const xs3 = xs.reshape([N, C, OS]);
  const r3 = residual?.reshape([N, O, OS]) ?? null;
  const y3 = gemm(op, w2, xs3, false, false, {
    dtype: g.dtype,
    bias: b,
    residual: r3,
    relu: g.relu,
    moments,
  });
  const y = y3.reshape([N, O, OD, OH, OW]);
  for (const t of [y3, w2, xs3, r3]) t?.dispose();
  return { y, xs };
}

/**
 * Pointwise input gradient: W^T @ gy per sample, scattered back to the stride grid when strided; at stride 1
 * `acc` (a gradient of x's shape) is added as the GEMM stores.
 */
export function pointwiseGradInput(op: string, gy: Tensor, w: Tensor, g: Geo, acc?: Tensor | null): Tensor {
  const { N, C, O, D, H, W, OD, OH, OW, S } = g;
  const unit = S.every((s) => s === 1);
  if (acc && !unit) throw new Error(`${op}: a strided input gradient cannot accumulate`);
  const gy3 = gy.reshape([N, O, OD * OH * OW]);
  const r3 = acc?.reshape([N, C, OD * OH * OW]) ?? null;
  const gxs = gemm(op, w.reshape([O, C]), gy3, true, false, { residual: r3 }).reshape([N, C, OD, OH, OW]);
  r3?.dispose();
  return unit ? gxs : strided(op, gxs, [N, C, D, H, W], S, true);
}

/** Pointwise weight gradient: gy @ xs^T per sample, summed over the batch; `xs` from the forward. */
export function pointwiseGradWeight(op: string, gy: Tensor, xs: Tensor, g: Geo): Tensor {
  const { N, C, O, OD, OH, OW } = g;
  const OS = OD * OH * OW;
  const gw = gemm(op, gy.reshape([N, O, OS]), xs.reshape([N, C, OS]), false, true, { sumBatch: true });
  const r = gw.reshape([O, C, 1, 1, 1]);
  gw.dispose();
  return r;
}
