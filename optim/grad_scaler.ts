/**
 * @file Dynamic loss scaling (PyTorch's `torch.cuda.amp.GradScaler`): the loss is multiplied by a scale before
 * backward so small gradients survive low precision; the gradients are divided by it before the optimizer
 * step; a step whose gradients hold inf/NaN is skipped and the scale halved; after `growthInterval` good steps
 * in a row the scale doubles.
 *
 * One GPU wait a step: {@link GradScaler.unscale} unscales every gradient and checks it on the GPU, writing
 * `[loss, foundInf]` into one two-float tensor, so the one readback the trainer already makes of the loss
 * also says whether to step.
 */
import { Tensor } from "../core/tensor.ts";
import { noGrad } from "../core/autograd.ts";
import { keep } from "../core/scope.ts";
import { launch1d } from "../kernels/codegen.ts";
import { mul } from "../kernels/elementwise/binary.ts";
import { concatIndex, dispatchChunks } from "./chunks.ts";

/** Options of {@link GradScaler} (PyTorch's defaults). */
export interface GradScalerOptions {
  /** Initial scale (default 2^16). */
  initScale?: number;
  /** Scale multiplier after `growthInterval` good steps (default 2). */
  growthFactor?: number;
  /** Scale multiplier after a step with inf/NaN gradients (default 0.5). */
  backoffFactor?: number;
  /** Good steps in a row before the scale grows (default 2000). */
  growthInterval?: number;
}

/** What {@link GradScaler.read} found: the (unscaled) loss and whether a gradient was inf/NaN. */
export interface ScalerReport {
  loss: number;
  foundInf: boolean;
}

/** Dynamic loss scaler with overflow skip; see the file comment. */
export class GradScaler {
  /** Current scale. */
  scale: number;
  readonly growthFactor: number;
  readonly backoffFactor: number;
  readonly growthInterval: number;
  /** Good steps since the last growth or backoff (PyTorch's `_growth_tracker`). */
  growthTracker = 0;
  /** Steps skipped for inf/NaN gradients so far. */
  skipped = 0;

  constructor(opts: GradScalerOptions = {}) {
    this.scale = opts.initScale ?? 2 ** 16;
    this.growthFactor = opts.growthFactor ?? 2;
    this.backoffFactor = opts.backoffFactor ?? 0.5;
    this.growthInterval = opts.growthInterval ?? 2000;
    if (!(this.scale > 0) || !Number.isFinite(this.scale)) {
      throw new Error(`GradScaler: initScale must be a positive finite number, got ${this.scale}`);
    }
    if (!(this.growthFactor > 1)) {
      throw new Error(`GradScaler: growthFactor must be > 1, got ${this.growthFactor}`);
    }
    if (!(this.backoffFactor > 0 && this.backoffFactor < 1)) {
      throw new Error(`GradScaler: backoffFactor must be in (0, 1), got ${this.backoffFactor}`);
    }
    if (!Number.isInteger(this.growthInterval) || this.growthInterval < 1) {
      throw new Error(`GradScaler: growthInterval must be a positive integer, got ${this.growthInterval}`);
    }
  }

  /** `loss * scale`: call backward on this instead of the loss. */
  scaleLoss(loss: Tensor): Tensor {
    return mul(loss, this.scale);
  }

  /**
   * Divides every parameter's gradient by the scale in place and checks it for inf/NaN (by the exponent bits,
   * which no fast-math assumption can fold away). Returns a new two-float tensor `[loss, foundInf]` (`loss`
   * copied from the one-element `loss`, or 0 without it) for {@link read}; the caller disposes it.
   */
  unscale(params: Tensor[], loss?: Tensor | null): Tensor {
    const op = "GradScaler.unscale";
    const gs = params.map((p) => p.grad).filter((g): g is Tensor => !!g);
    if (!gs.length) throw new Error(`${op}: no parameter has a gradient`);
    if (loss && loss.numel() !== 1) {
      throw new Error(`${op}: the loss must be a scalar, got ${loss.describe()}`);
    }
    return noGrad(() => {
      const device = gs[0].device;
      const rep = keep(Tensor.empty(device, [2], "f32", op));
      if (loss) {
        launch1d({
          op,
          args: [{ name: "l", t: loss }, { name: "r", t: rep, write: true }],
          n: 1,
          body: `  r_st(0u, l_ld(0u)); r_st(1u, 0.0);`,
        });
      } else {
        launch1d({
          op,
          args: [{ name: "r", t: rep, write: true }],
          n: 1,
          body: `  r_st(0u, 0.0); r_st(1u, 0.0);`,
        });
      }
      for (const g of gs) {
        if (g.dtype !== "f32") throw new Error(`${op}: gradients must be f32, got ${g.describe()}`);
      }
      for (const chunk of unscaleChunks(gs)) unscaleKernel(op, chunk, rep, 1 / this.scale);
      return rep;
    });
  }

  /** Reads a report from {@link unscale} (the step's one GPU wait) and disposes it. */
  async read(report: Tensor): Promise<ScalerReport> {
    const a = await report.toArray();
    report.dispose();
    return { loss: a[0], foundInf: a[1] !== 0 };
  }

  /**
   * Runs `step` (clipping and the optimizer) unless the report found inf/NaN, then updates the scale;
   * returns whether the step ran.
   */
  step(report: ScalerReport, step: () => void): boolean {
    if (!report.foundInf) step();
    this.update(report.foundInf);
    return !report.foundInf;
  }

  /** PyTorch's `update`: back off (and restart counting) on inf/NaN, grow after `growthInterval` good steps. */
  update(foundInf: boolean): void {
    if (foundInf) {
      this.scale *= this.backoffFactor;
      this.growthTracker = 0;
      this.skipped++;
      return;
    }
    this.growthTracker++;
    if (this.growthTracker === this.growthInterval) {
      const grown = this.scale * this.growthFactor;
      // PyTorch keeps the old scale when growing would overflow f32.
      if (Number.isFinite(Math.fround(grown))) this.scale = grown;
      this.growthTracker = 0;
    }
  }

  /** Scale and growth tracker, for resuming (PyTorch's `state_dict`). */
  stateDict(): { scale: number; growthTracker: number } {
    return { scale: this.scale, growthTracker: this.growthTracker };
  }

  /** Restores {@link stateDict}. */
  loadStateDict(s: { scale: number; growthTracker: number }): void {
    if (!(s.scale > 0) || !Number.isInteger(s.growthTracker) || s.growthTracker < 0) {
      throw new Error(`GradScaler.loadStateDict: bad state ${JSON.stringify(s)}`);
    }
    this.scale = s.scale;
    this.growthTracker = s.growthTracker;
  }
}

/** Most gradients one unscale dispatch handles (one storage binding each, plus the report's). */
export const UNSCALE_CHUNK = 16;

/**
 * Splits the gradients into dispatches of up to UNSCALE_CHUNK, as many as the device's storage-binding limit
 * allows (one each, plus the report's); a gradient larger than one binding (bound in windows) goes alone.
 */
function unscaleChunks(gs: Tensor[]): Tensor[][] {
  const limit = gs[0].device.info.maxStorageBuffersPerShaderStage;
  return dispatchChunks(gs, Math.min(UNSCALE_CHUNK, limit - 1), (g) => g);
}

/**
 * Divides a chunk of gradients by the scale in place, flagging inf/NaN in `rep[1]` ({@link concatIndex}
 * splits the chunk's concatenation). A lone gradient whose length allows it goes by vec4. Every lane that
 * sees a non-finite value stores the same 1.0, so the race cannot change the result.
 */
function unscaleKernel(op: string, chunk: Tensor[], rep: Tensor, inv: number): void {
  const v4 = chunk.length === 1 && chunk[0].numel() % 4 === 0;
  const bad = v4
    ? `any((bitcast<vec4<u32>>(x) & vec4<u32>(0x7f800000u)) == vec4<u32>(0x7f800000u))`
    : `(bitcast<u32>(x) & 0x7f800000u) == 0x7f800000u`;
  const { uniforms, n, wgsl } = concatIndex(
    chunk.map((g) => g.numel()),
    (k) =>
      `let x = g${k}_ld(j);
    if (${bad}) { r_st(1u, 1.0); }
    g${k}_st(j, x * sh.inv);`,
    v4 ? 4 : 1,
  );
  launch1d({
    op,
    args: [...chunk.map((g, k) => ({ name: `g${k}`, t: g, write: true, vec4: v4 })), {
      name: "r",
      t: rep,
      write: true,
    }],
    n,
    uniforms: { ...uniforms, inv: { f: inv } },
    key: "unscale",
    body: wgsl,
    work: { bytes: 8 * chunk.reduce((a, g) => a + g.numel(), 0) },
  });
}
