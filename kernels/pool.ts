/**
 * @file Pooling and resampling over [N, C, D, H, W]: `maxPool3d` (saves the argmax for its backward, which
 * gathers over the windows covering each input voxel, so no atomics), global adaptive max / average
 * pooling, and nearest-neighbour upsampling by integer factors.
 */
import { Tensor } from "../core/tensor.ts";
import { record } from "../core/autograd.ts";
import { f, type Geo3d, launch1d, u } from "./codegen.ts";
import { type Triple, triple } from "./conv/mod.ts";
import { argmax, mean } from "./reduce.ts";

function check5d(op: string, x: Tensor): void {
  x.storage(op);
  if (x.ndim !== 5) throw new Error(`${op}: input must be 5-D [N, C, D, H, W], got [${x.shape}]`);
  if (x.dtype !== "f32") throw new Error(`${op}: expects f32, got ${x.describe()}`);
}

/** Options of {@link maxPool3d}. */
export interface MaxPoolOptions {
  kernel: Triple;
  /** Default: the kernel size. */
  stride?: Triple;
  padding?: Triple;
}

/** 3-D max pooling (floor mode, implicit -inf padding), like `torch.nn.functional.max_pool3d`. */
export function maxPool3d(x: Tensor, opts: MaxPoolOptions): Tensor {
  const op = "F.maxPool3d";
  check5d(op, x);
  const K = triple(opts.kernel, undefined, "kernel", op);
  const St = opts.stride === undefined ? K : triple(opts.stride, undefined, "stride", op);
  const P = triple(opts.padding, 0, "padding", op);
  const [N, C, D, H, W] = x.shape;
  if (K.some((k) => k < 1) || St.some((s) => s < 1)) throw new Error(`${op}: kernel and stride must be >= 1`);
  if (P.some((p, i) => 2 * p > K[i])) {
    throw new Error(`${op}: padding [${P}] must be at most half the kernel [${K}]`);
  }
  const ins = [D, H, W];
  const outs = ins.map((n, i) => Math.floor((n + 2 * P[i] - K[i]) / St[i]) + 1);
  if (outs.some((o) => o < 1)) {
    throw new Error(`${op}: kernel [${K}] is larger than the padded input [${x.shape}]`);
  }
  const [OD, OH, OW] = outs;
  const y = Tensor.empty(x.device, [N, C, OD, OH, OW], "f32", op);
  const idx = Tensor.empty(x.device, [N, C, OD, OH, OW], "i32", op);
  const OS = OD * OH * OW, IS = D * H * W;
  launch1d({
    op,
    args: [{ name: "x", t: x }, { name: "y", t: y, write: true }, { name: "ix", t: idx, write: true }],
    n: y.numel(),
    body: `  let nc = gid / ${u(OS)};
  let p = gid % ${u(OS)};
  let od = i32(p / ${u(OH * OW)}); let oh = i32((p / ${u(OW)}) % ${u(OH)}); let ow = i32(p % ${u(OW)});
  var best = ${f(-Infinity)};
  var bi = -1;
  for (var kd = 0; kd < ${K[0]}; kd = kd + 1) {
    let id = od * ${St[0]} - ${P[0]} + kd;
    for (var kh = 0; kh < ${K[1]}; kh = kh + 1) {
      let ih = oh * ${St[1]} - ${P[1]} + kh;
      for (var kw = 0; kw < ${K[2]}; kw = kw + 1) {
        let iw = ow * ${St[2]} - ${P[2]} + kw;
        if (id >= 0 && id < ${D} && ih >= 0 && ih < ${H} && iw >= 0 && iw < ${W}) {
          let q = (id * ${H} + ih) * ${W} + iw;
          let v = x_ld(nc * ${u(IS)} + u32(q));
          if (v > best || bi < 0) { best = v; bi = q; }
        }
      }
    }
  }
  y_st(gid, best);
  ix_st(gid, bi);`,
  });
  const g0 = { N, C, D, H, W, OD, OH, OW, K, St, P };
  return record(op, y, [x], [idx], (g, [sidx]) => [maxPoolBackward(`${op}.backward`, g, sidx, g0)]);
}

function maxPoolBackward(
  op: string,
  gy: Tensor,
  idx: Tensor,
  g: Geo3d & {
    K: number[];
    St: number[];
    P: number[];
  },
): Tensor {
  const { N, C, D, H, W, OD, OH, OW, K, St, P } = g;
  const gx = Tensor.empty(gy.device, [N, C, D, H, W], "f32", op);
  const IS = D * H * W, OS = OD * OH * OW;
  // Output indices whose window covers input coordinate q along one dim: ceil((q+p-k+1)/s) .. floor((q+p)/s).
  const rng = (q: string, i: number, n: number, name: string) =>
    `let ${name}0 = max(0, (${q} + ${P[i]} - ${K[i] - 1} + ${St[i] - 1}) / ${St[i]}); let ${name}1 = min(${
      n - 1
    }, (${q} + ${P[i]}) / ${St[i]});`;
  launch1d({
    op,
    args: [{ name: "gy", t: gy }, { name: "ix", t: idx }, { name: "gx", t: gx, write: true }],
    n: gx.numel(),
    body: `  let nc = gid / ${u(IS)};
  let q = i32(gid % ${u(IS)});
  let qd = q / ${H * W}; let qh = (q / ${W}) % ${H}; let qw = q % ${W};
  ${rng("qd", 0, OD, "d")}
  ${rng("qh", 1, OH, "h")}
  ${rng("qw", 2, OW, "w")}
  var acc = 0.0;
  for (var od = max(d0, 0); od <= d1; od = od + 1) {
    for (var oh = max(h0, 0); oh <= h1; oh = oh + 1) {
      for (var ow = max(w0, 0); ow <= w1; ow = ow + 1) {
        let o = nc * ${u(OS)} + u32((od * ${OH} + oh) * ${OW} + ow);
        if (ix_ld(o) == q) { acc = acc + gy_ld(o); }
      }
    }
  }
  gx_st(gid, acc);`,
  });
  return gx;
}

/**
 * Adaptive max pooling to output size 1 (global): [N, C, D, H, W] -> [N, C, 1, 1, 1]. The gradient goes to
 * the first maximum, as in PyTorch.
 */
export function adaptiveMaxPool3d(x: Tensor, outputSize: Triple = 1): Tensor {
  const op = "F.adaptiveMaxPool3d";
  check5d(op, x);
  const o = triple(outputSize, undefined, "outputSize", op);
  if (o.some((v) => v !== 1)) {
    throw new Error(`${op}: only output size 1 (global pooling) is supported, got [${o}]`);
  }
  const [N, C, D, H, W] = x.shape;
  const S = D * H * W;
  const flat = x.reshape([N * C, S]);
  const am = argmax(flat, 1);
  flat.dispose();
  const y = Tensor.empty(x.device, [N, C, 1, 1, 1], "f32", op);
  launch1d({
    op,
    args: [{ name: "x", t: x }, { name: "i", t: am }, { name: "y", t: y, write: true }],
    n: N * C,
    body: `  y_st(gid, x_ld(gid * ${u(S)} + u32(i_ld(gid))));`,
  });
  const out = record(op, y, [x], [am], (g, [si]) => {
    const gx = Tensor.empty(g.device, [N, C, D, H, W], "f32", `${op}.backward`);
    launch1d({
      op: `${op}.backward`,
      args: [{ name: "g", t: g }, { name: "i", t: si }, { name: "gx", t: gx, write: true }],
      n: gx.numel(),
      body: `  let r = gid / ${u(S)};
  gx_st(gid, select(0.0, g_ld(r), u32(i_ld(r)) == gid % ${u(S)}));`,
    });
    return [gx];
  });
  am.dispose();
  return out;
}

/** Adaptive average pooling to output size 1 (global): [N, C, D, H, W] -> [N, C, 1, 1, 1]. */
export function adaptiveAvgPool3d(x: Tensor, outputSize: Triple = 1): Tensor {
  const op = "F.adaptiveAvgPool3d";
  check5d(op, x);
  const o = triple(outputSize, undefined, "outputSize", op);
  if (o.some((v) => v !== 1)) {
    throw new Error(`${op}: only output size 1 (global pooling) is supported, got [${o}]`);
  }
  return mean(x, [2, 3, 4], true);
}

/** Nearest-neighbour upsampling by integer factors, e.g. [2, 2, 2] or [1, 2, 2]. */
export function upsampleNearest3d(x: Tensor, scale: Triple): Tensor {
  const op = "F.upsampleNearest3d";
  check5d(op, x);
  const s = triple(scale, undefined, "scale", op);
  if (s.some((v) => v < 1)) throw new Error(`${op}: scale factors must be positive integers, got [${s}]`);
  const [N, C, D, H, W] = x.shape;
  const [OD, OH, OW] = [D * s[0], H * s[1], W * s[2]];
  const y = Tensor.empty(x.device, [N, C, OD, OH, OW], "f32", op);
  launch1d({
    op,
    args: [{ name: "x", t: x }, { name: "y", t: y, write: true }],
    n: y.numel(),
    body: `  let nc = gid / ${u(OD * OH * OW)};
  let p = gid % ${u(OD * OH * OW)};
  let d = p / ${u(OH * OW)}; let h = (p / ${u(OW)}) % ${u(OH)}; let w = p % ${u(OW)};
  y_st(gid, x_ld(nc * ${u(D * H * W)} + ((d / ${u(s[0])}) * ${u(H)} + h / ${u(s[1])}) * ${u(W)} + w / ${
      u(s[2])
    }));`,
  });
  return record(op, y, [x], [], (g) => {
    const gx = Tensor.empty(g.device, [N, C, D, H, W], "f32", `${op}.backward`);
    const taps: string[] = [];
    for (let a = 0; a < s[0]; a++) {
      for (let b = 0; b < s[1]; b++) {
        for (let c = 0; c < s[2]; c++) {
          taps.push(`acc = acc + g_ld(base + ${u((a * OH + b) * OW + c)});`);
        }
      }
    }
    launch1d({
      op: `${op}.backward`,
      args: [{ name: "g", t: g }, { name: "gx", t: gx, write: true }],
      n: gx.numel(),
      body: `  let nc = gid / ${u(D * H * W)};
  let q = gid % ${u(D * H * W)};
  let d = q / ${u(H * W)}; let h = (q / ${u(W)}) % ${u(H)}; let w = q % ${u(W)};
  let base = nc * ${u(OD * OH * OW)} + ((d * ${u(s[0])}) * ${u(OH)} + h * ${u(s[1])}) * ${u(OW)} + w * ${
        u(s[2])
      };
  var acc = 0.0;
  ${taps.join("\n  ")}
  gx_st(gid, acc);`,
    });
    return [gx];
  });
}
