/**
 * @file Pooling and resampling over [N, C, D, H, W]: `maxPool3d` (saves the argmax for its backward, which
 * gathers over the windows covering each input voxel, so no atomics), global adaptive max / average
 * pooling, and nearest-neighbour upsampling by integer factors.
 */
import { Tensor } from "../core/tensor.ts";
import { record } from "../core/autograd.ts";
import { f, type Geo3d, launch1d, u } from "./codegen.ts";

import { type Triple, triple } from "./conv/mod.ts";
import { range } from "./conv/common.ts";
import { argmax, mean } from "./reduce.ts";

/**
 * Sizes of a 3-D pooling or resampling as uniforms: divisors for splitting flat indices (`div_OS`, ...), and
 * i32 copies where the window arithmetic is signed. Windows and scale factors stay in the code: a model uses
 * one or two, and constant strides divide by shifts.
 */
function poolUniforms(g: Geo3d) {
  const i = (v: number) => ({ i: v });
  const d = (v: number) => ({ d: v });
  return {
    OS: d(g.OD * g.OH * g.OW),
    OHW: d(g.OH * g.OW),
    OW: d(g.OW),
    IS: d(g.D * g.H * g.W),
    HW: d(g.H * g.W),
    W: d(g.W),
    H: g.H,
    OH: g.OH,
    Di: i(g.D),
    Hi: i(g.H),
    Wi: i(g.W),
    ODi: i(g.OD),
    OHi: i(g.OH),
    OWi: i(g.OW),
  };
}

/** WGSL splitting the flat index `x` of [NC, A, B, C] (sizes in `sh.<S>`, `sh.<BC>`, `sh.<C>`) into lets. */
function split4(
  x: string,
  S: string,
  BC: string,
  C: string,
  names: [string, string, string, string],
): string {
  const [nc, a, b, c] = names;
  return `let ${nc} = div_${S}(${x}); let r0_ = ${x} - ${nc} * sh.${S};
  let ${a} = div_${BC}(r0_); let r1_ = r0_ - ${a} * sh.${BC};
  let ${b} = div_${C}(r1_); let ${c} = r1_ - ${b} * sh.${C};`;
}

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
  const g0 = { N, C, D, H, W, OD, OH, OW, K, St, P };
  // The window (tiny, unrolled-friendly loop bounds) stays in the code; sizes are uniforms.
  launch1d({
    op,
    args: [{ name: "x", t: x }, { name: "y", t: y, write: true }, { name: "ix", t: idx, write: true }],
    n: y.numel(),
    uniforms: poolUniforms(g0),
    body: `  ${split4("gid", "OS", "OHW", "OW", ["nc", "odu", "ohu", "owu"])}
  let od = i32(odu); let oh = i32(ohu); let ow = i32(owu);
  var best = ${f(-Infinity)};
  var bi = -1;
  for (var kd = 0; kd < ${K[0]}; kd = kd + 1) {
    let id = od * ${St[0]} - ${P[0]} + kd;
    for (var kh = 0; kh < ${K[1]}; kh = kh + 1) {
      let ih = oh * ${St[1]} - ${P[1]} + kh;
      for (var kw = 0; kw < ${K[2]}; kw = kw + 1) {
        let iw = ow * ${St[2]} - ${P[2]} + kw;
        if (id >= 0 && id < sh.Di && ih >= 0 && ih < sh.Hi && iw >= 0 && iw < sh.Wi) {
          let q = (id * sh.Hi + ih) * sh.Wi + iw;
          let v = x_ld(nc * sh.IS + u32(q));
          if (v > best || bi < 0) { best = v; bi = q; }
        }
      }
    }
  }
  y_st(gid, best);
  ix_st(gid, bi);`,
  });
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
  const { N, C, D, H, W, K, St, P } = g;
  const gx = Tensor.empty(gy.device, [N, C, D, H, W], "f32", op);
  // Output indices whose window covers input coordinate q along one dim: ceil((q+p-k+1)/s) .. floor((q+p)/s).
  const rng = (q: string, i: number, n: string, name: string) =>
    `let ${name}0 = max(0, (${q} + ${P[i] - K[i] + St[i]}) / ${
      St[i]
    }); let ${name}1 = min(${n} - 1, (${q} + ${P[i]}) / ${St[i]});`;
  if (W % 4 === 0) {
    // A lane per 4 inputs along W: each window that covers any of them (from the first's lowest, w0, to the
    // last's highest, v1) is read once (the stem's pool: 3 x 1-2 windows for 4 inputs, instead of up to 4 for
    // each), compared with all four, and gx stored as a vec4.
    launch1d({
      op,
      args: [{ name: "gy", t: gy }, { name: "ix", t: idx }, { name: "gx", t: gx, write: true, vec4: true }],
      n: gx.numel() / 4,
      uniforms: poolUniforms(g),
      body: `  let e = gid * 4u;
  ${split4("e", "IS", "HW", "W", ["nc", "qdu", "qhu", "qwu"])}
  let q = i32(e - nc * sh.IS);
  let qd = i32(qdu); let qh = i32(qhu); let qw = i32(qwu);
  ${rng("qd", 0, "sh.ODi", "d")}
  ${rng("qh", 1, "sh.OHi", "h")}
  ${rng("qw", 2, "sh.OWi", "w")}
  ${rng("(qw + 3)", 2, "sh.OWi", "v")}
  var acc = vec4<f32>(0.0);
  for (var od = max(d0, 0); od <= d1; od = od + 1) {
    for (var oh = max(h0, 0); oh <= h1; oh = oh + 1) {
      for (var ow = w0; ow <= v1; ow = ow + 1) {
        let o = nc * sh.OS + u32((od * sh.OHi + oh) * sh.OWi + ow);
        let k = ix_ld(o) - q;
        let v = gy_ld(o);
        acc = acc + select(vec4<f32>(0.0), vec4<f32>(v), vec4<i32>(k) == vec4<i32>(0, 1, 2, 3));
      }
    }
  }
  gx_st(gid, acc);`,
    });
    return gx;
  }
  launch1d({
    op,
    args: [{ name: "gy", t: gy }, { name: "ix", t: idx }, { name: "gx", t: gx, write: true }],
    n: gx.numel(),
    uniforms: poolUniforms(g),
    body: `  ${split4("gid", "IS", "HW", "W", ["nc", "qdu", "qhu", "qwu"])}
  let q = i32(gid - nc * sh.IS);
  let qd = i32(qdu); let qh = i32(qhu); let qw = i32(qwu);
  ${rng("qd", 0, "sh.ODi", "d")}
  ${rng("qh", 1, "sh.OHi", "h")}
  ${rng("qw", 2, "sh.OWi", "w")}
  var acc = 0.0;
  for (var od = max(d0, 0); od <= d1; od = od + 1) {
    for (var oh = max(h0, 0); oh <= h1; oh = oh + 1) {
      for (var ow = max(w0, 0); ow <= w1; ow = ow + 1) {
        let o = nc * sh.OS + u32((od * sh.OHi + oh) * sh.OWi + ow);
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
    uniforms: { S },
    body: `  y_st(gid, x_ld(gid * sh.S + u32(i_ld(gid))));`,
  });
  const out = record(op, y, [x], [am], (g, [si]) => {
    const gx = Tensor.empty(g.device, [N, C, D, H, W], "f32", `${op}.backward`);
    launch1d({
      op: `${op}.backward`,
      args: [{ name: "g", t: g }, { name: "i", t: si }, { name: "gx", t: gx, write: true }],
      n: gx.numel(),
      uniforms: { S: { d: S } },
      body: `  let r = div_S(gid);
  gx_st(gid, select(0.0, g_ld(r), u32(i_ld(r)) == gid - r * sh.S));`,
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
  const upUni = poolUniforms({ N, C, D, H, W, OD, OH, OW });
  // Scale factors (tiny, they set the backward's unrolled taps) stay constants; sizes are uniforms.
  if (OW % 4 === 0 && 4 % s[2] === 0) upsampleForward4(op, x, y, s, upUni);
  else {
    launch1d({
      op,
      args: [{ name: "x", t: x }, { name: "y", t: y, write: true }],
      n: y.numel(),
      uniforms: upUni,
      body: `  ${split4("gid", "OS", "OHW", "OW", ["nc", "d", "h", "w"])}
  y_st(gid, x_ld(nc * sh.IS + ((d / ${u(s[0])}) * sh.H + h / ${u(s[1])}) * sh.W + w / ${u(s[2])}));`,
    });
  }
  return record(op, y, [x], [], (g) => {
    const gx = Tensor.empty(g.device, [N, C, D, H, W], "f32", `${op}.backward`);
    if (W % 4 === 0 && s[2] <= 2) {
      upsampleBackward4(`${op}.backward`, g, gx, s, upUni);
      return [gx];
    }
    const taps: string[] = [];
    for (let a = 0; a < s[0]; a++) {
      for (let b = 0; b < s[1]; b++) {
        for (let c = 0; c < s[2]; c++) {
          taps.push(`acc = acc + g_ld(base + ${u(a)} * sh.OHW + ${u(b)} * sh.OW + ${u(c)});`);
        }
      }
    }
    launch1d({
      op: `${op}.backward`,
      args: [{ name: "g", t: g }, { name: "gx", t: gx, write: true }],
      n: gx.numel(),
      uniforms: upUni,
      body: `  ${split4("gid", "IS", "HW", "W", ["nc", "d", "h", "w"])}
  let base = nc * sh.OS + ((d * ${u(s[0])}) * sh.OH + h * ${u(s[1])}) * sh.OW + w * ${u(s[2])};
  var acc = 0.0;
  ${taps.join("\n  ")}
  gx_st(gid, acc);`,
    });
    return [gx];
  });
}

/**
 * The upsampling a lane per output vec4 (output rows a multiple of 4 wide, W scale 1, 2 or 4): the 4 / sw
 * source values it repeats are loaded once, one store instead of 4, one index split instead of 4.
 */
function upsampleForward4(
  op: string,
  x: Tensor,
  y: Tensor,
  s: number[],
  uni: ReturnType<typeof poolUniforms>,
) {
  const sw = s[2], loads = range(4 / sw).map((k) => `let v${k} = x_ld(i + ${u(k)});`);
  const comps = range(4).map((t) => `v${Math.floor(t / sw)}`);
  launch1d({
    op,
    args: [{ name: "x", t: x }, { name: "y", t: y, write: true, vec4: true }],
    n: y.numel() / 4,
    uniforms: uni,
    body: `  let e = gid * 4u;
  ${split4("e", "OS", "OHW", "OW", ["nc", "d", "h", "w"])}
  let i = nc * sh.IS + ((d / ${u(s[0])}) * sh.H + h / ${u(s[1])}) * sh.W + w / ${u(sw)};
  ${loads.join(" ")}
  y_st(gid, vec4<f32>(${comps.join(", ")}));`,
  });
}

/**
 * The upsampling's backward a lane per input-gradient vec4 (W a multiple of 4, W scale 1 or 2): its
 * gradient rows are read as vec4s, the sums run in the scalar kernel's order (d, h, then w taps), so the
 * result is bit-identical to it.
 */
function upsampleBackward4(
  op: string,
  g: Tensor,
  gx: Tensor,
  s: number[],
  uni: ReturnType<typeof poolUniforms>,
) {
  const taps: string[] = [];
  for (let a = 0; a < s[0]; a++) {
    for (let b = 0; b < s[1]; b++) {
      const at = `(base + ${u(a)} * sh.OHW + ${u(b)} * sh.OW) / 4u`;
      taps.push(
        s[2] === 1 ? `acc = acc + g_ld(${at});` : `{ let v0 = g_ld(${at}); let v1 = g_ld(${at} + 1u); ` +
          `acc = acc + vec4<f32>(v0.x, v0.z, v1.x, v1.z); acc = acc + vec4<f32>(v0.y, v0.w, v1.y, v1.w); }`,
      );
    }
  }
  launch1d({
    op,
    args: [{ name: "g", t: g, vec4: true }, { name: "gx", t: gx, write: true, vec4: true }],
    n: gx.numel() / 4,
    uniforms: uni,
    body: `  let e = gid * 4u;
  ${split4("e", "IS", "HW", "W", ["nc", "d", "h", "w"])}
  let base = nc * sh.OS + ((d * ${u(s[0])}) * sh.OH + h * ${u(s[1])}) * sh.OW + w * ${u(s[2])};
  var acc = vec4<f32>(0.0);
  ${taps.join("\n  ")}
  gx_st(gid, acc);`,
  });
}
