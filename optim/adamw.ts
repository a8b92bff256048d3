/**
 * @file AdamW with a fused WGSL kernel (decoupled weight decay, moments, bias correction and the update in a
 * single pass over param, grad, m and v) that updates up to sixteen parameter tensors per dispatch, exactly as
 * `torch.optim.AdamW` (non-foreach path) computes it; per-step scalars travel in the params uniform, so no
 * kernel recompiles. A weight with an f16 copy from autocast gets the copy rewritten in the same pass.
 */
import type { Tensor } from "../core/tensor.ts";
import { keep } from "../core/scope.ts";
import { launch1d, params } from "../kernels/codegen.ts";
import { zerosLike } from "../kernels/creation.ts";
import { concatIndex, dispatchChunks } from "./chunks.ts";

/** A group of parameters sharing hyper-parameters (anything omitted falls back to the optimizer's). */
export interface ParamGroup {
  params: Tensor[];
  lr?: number;
  weightDecay?: number;
}

/** AdamW hyper-parameters (PyTorch's defaults). */
export interface AdamWOptions {
  lr?: number;
  betas?: [number, number];
  eps?: number;
  weightDecay?: number;
}

/** Serializable optimizer state: the step count and the moment tensors, in parameter order. */
export interface AdamWState {
  step: number;
  m: Tensor[];
  v: Tensor[];
}

/** The AdamW optimizer. */
export class AdamW {
  readonly groups: (Required<ParamGroup>)[];
  readonly betas: [number, number];
  readonly eps: number;
  /** Learning rate of groups that did not set their own; schedules write it every step. */
  lr: number;
  #step = 0;
  #m = new Map<Tensor, Tensor>();
  #v = new Map<Tensor, Tensor>();

  constructor(params: Tensor[] | ParamGroup[], opts: AdamWOptions = {}) {
    this.lr = opts.lr ?? 1e-3;
    this.betas = opts.betas ?? [0.9, 0.999];
    this.eps = opts.eps ?? 1e-8;
    const wd = opts.weightDecay ?? 1e-2;
    const groups: ParamGroup[] = params.length && "params" in (params[0] as object)
      ? params as ParamGroup[]
      : [{ params: params as Tensor[] }];
    this.groups = groups.map((g) => ({
      params: g.params,
      lr: g.lr ?? NaN,
      weightDecay: g.weightDecay ?? wd,
    }));
    for (const g of this.groups) {
      for (const p of g.params) {
        if (p.dtype !== "f32") throw new Error(`AdamW: parameter ${p.describe()} is not f32`);
      }
    }
  }

  /** Number of steps taken. */
  get stepCount(): number {
    return this.#step;
  }

  /**
   * Applies one update to every parameter that has a gradient: one dispatch per chunk of up to
   * {@link ADAMW_CHUNK} parameters of a group (PyTorch's multi-tensor idea; a CSN-152 has ~470 tensors).
   */
  step(): void {
    this.#step++;
    const [b1, b2] = this.betas;
    const bc1 = 1 - b1 ** this.#step, bc2 = 1 - b2 ** this.#step;
    for (const g of this.groups) {
      const lr = Number.isNaN(g.lr) ? this.lr : g.lr;
      const ready: Slot[] = [];
      for (const p of g.params) {
        if (!p.grad) continue;
        if (p.grad.shape.join() !== p.shape.join()) {
          throw new Error(`AdamW: gradient [${p.grad.shape}] does not match parameter [${p.shape}]`);
        }
        let m = this.#m.get(p), v = this.#v.get(p);
        if (!m || !v) {
          m = keep(zerosLike(p));
          v = keep(zerosLike(p));
          this.#m.set(p, m);
          this.#v.set(p, v);
        }
        // An f16 copy autocast made of this weight (kernels/cast.ts castWeight) is written by the update too.
        const h = p.storage("AdamW.step").derived?.t ?? null;
        ready.push({ p, g: p.grad, m, v, h: h && h.dtype === "f16" && h.numel() === p.numel() ? h : null });
      }
      const prm = params(
        { f: 1 - lr * g.weightDecay },
        { f: b1 },
        { f: b2 },
        { f: lr / bc1 },
        { f: Math.sqrt(bc2) },
        { f: this.eps },
      );
      for (const chunk of chunks(ready)) {
        adamwKernel(chunk, prm);
        // The copies hold the new weights: current at the version the update gave their parameters.
        for (const s of chunk) {
          const st = s.p.storage("AdamW.step");
          if (s.h && st.derived?.t === s.h) st.derived.version = st.version;
        }
      }
    }
  }

  /** Drops every gradient (PyTorch's `zero_grad(set_to_none=True)`). */
  zeroGrad(): void {
    for (const g of this.groups) {
      for (const p of g.params) {
        p.grad?.dispose();
        p.grad = null;
      }
    }
  }

  /** The step count and moment tensors (shared, not copied), for checkpoints. */
  stateDict(): AdamWState {
    const all = this.groups.flatMap((g) => g.params);
    const z = (p: Tensor, map: Map<Tensor, Tensor>) => {
      let t = map.get(p);
      if (!t) map.set(p, t = keep(zerosLike(p)));
      return t;
    };
    return { step: this.#step, m: all.map((p) => z(p, this.#m)), v: all.map((p) => z(p, this.#v)) };
  }

  /** Restores a state from {@link stateDict} (moments copied into this optimizer's buffers). */
  loadStateDict(s: AdamWState): void {
    const all = this.groups.flatMap((g) => g.params);
    if (s.m.length !== all.length || s.v.length !== all.length) {
      throw new Error(`AdamW.loadStateDict: state has ${s.m.length} moments for ${all.length} parameters`);
    }
    const mine = this.stateDict();
    all.forEach((_, i) => {
      mine.m[i].assign(s.m[i]);
      mine.v[i].assign(s.v[i]);
    });
    this.#step = s.step;
  }

  /** Frees the moment buffers. */
  dispose(): void {
    for (const t of [...this.#m.values(), ...this.#v.values()]) t.dispose();
    this.#m.clear();
    this.#v.clear();
  }
}

/** One parameter's tensors in an update. */
interface Slot {
  p: Tensor;
  g: Tensor;
  m: Tensor;
  v: Tensor;
  /** The parameter's f16 copy under autocast, written with the new values (the "master weights" pattern). */
  h: Tensor | null;
}

/** Most parameters one AdamW dispatch updates (4 storage bindings each). */
export const ADAMW_CHUNK = 16;

/**
 * Splits the parameters into dispatches: up to ADAMW_CHUNK each, as many as the device's storage-binding
 * limit allows (4 a parameter, 5 with an f16 copy); a tensor bound in several windows (larger than one
 * binding) goes alone.
 */
function chunks(slots: Slot[]): Slot[][] {
  if (!slots.length) return [];
  const limit = slots[0].p.device.info.maxStorageBuffersPerShaderStage;
  const each = slots.some((s) => s.h) ? 5 : 4;
  return dispatchChunks(slots, Math.min(ADAMW_CHUNK, Math.floor(limit / each)), (s) => s.p);
}

/**
 * The fused update of a chunk, as `torch.optim.AdamW` (non-foreach path) computes it: element `gid` of the
 * chunk's concatenation belongs to the parameter whose end offset (uniform `e<k>`) first exceeds it.
 */
function adamwKernel(chunk: Slot[], prm: Uint32Array): void {
  const update = (k: number) =>
    `let gr = g${k}_ld(j);
    let pd = p${k}_ld(j) * pf(0u);
    // exp_avg.lerp_(grad, 1 - beta1); exp_avg_sq.mul_(beta2).addcmul_(grad, grad, 1 - beta2)
    let mo = m${k}_ld(j);
    let mn = mo + (1.0 - pf(1u)) * (gr - mo);
    let vn = v${k}_ld(j) * pf(2u) + (1.0 - pf(2u)) * gr * gr;
    let denom = sqrt(vn) / pf(4u) + pf(5u);
    m${k}_st(j, mn);
    v${k}_st(j, vn);
    let pn = pd - pf(3u) * mn / denom;
    p${k}_st(j, pn);${
      chunk[k].h
        ? `
    h${k}_st(j, pn);`
        : ""
    }`;
  const { uniforms, n, wgsl } = concatIndex(chunk.map((s) => s.p.numel()), update);
  launch1d({
    op: "AdamW.step",
    args: chunk.flatMap((s, k) => [
      { name: `p${k}`, t: s.p, write: true },
      { name: `g${k}`, t: s.g },
      { name: `m${k}`, t: s.m, write: true },
      { name: `v${k}`, t: s.v, write: true },
      ...(s.h ? [{ name: `h${k}`, t: s.h, write: true }] : []),
    ]),
    n,
    params: prm,
    uniforms,
    // The update depends on the parameters' count and f16 copies, both in the bindings.
    key: "adamw",
    body: wgsl,
  });
}
