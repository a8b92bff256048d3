/**
 * @file Half precision: the f32 <-> f16 cast (with autograd) and the autocast switch that nn.Conv3d and
 * nn.Linear consult.
 *
 * Mixed precision here follows PyTorch's autocast for the ops that matter: under `autocast`, a conv or
 * linear layer casts its input and a copy of its weight to f16 and calls the f32-accumulating kernel, which
 * reads f16 (kernels/codegen.ts widens it) and writes f32. Everything after (batch norm, activations, losses,
 * reductions) stays f32, and so do the master weights and every gradient: the backward of an f16 tensor is
 * an f32 tensor (the conv/GEMM gradient kernels write f32), so the cast's backward passes it through.
 */
import { Tensor } from "../core/tensor.ts";
import type { Device } from "../core/device.ts";
import type { DType } from "../core/dtype.ts";
import { noGrad, record } from "../core/autograd.ts";
import { keep, track } from "../core/scope.ts";
import { launch1d } from "./codegen.ts";

/** Whether a device can hold f16 tensors (the adapter granted `shader-f16`). */
export function hasF16(device: Device): boolean {
  return device.info.features.includes("shader-f16");
}

/**
 * Converts between f32 and f16 (round to nearest even; values beyond 65504 become inf, as numpy's
 * `astype(float16)`). Casting to the same dtype copies. The gradient is f32 whatever the direction (master
 * weights and their gradients are f32); it passes through unchanged.
 */
export function castFloat(x: Tensor, dtype: "f32" | "f16"): Tensor {
  const op = "F.cast";
  if (!(x instanceof Tensor)) throw new Error(`${op}: expected a tensor`);
  x.storage(op);
  if ((x.dtype !== "f32" && x.dtype !== "f16") || (dtype !== "f32" && dtype !== "f16")) {
    throw new Error(`${op}: f16 casts go between f32 and f16, got ${x.describe()} -> ${dtype}`);
  }
  if ((x.dtype === "f16" || dtype === "f16") && !hasF16(x.device)) {
    throw new Error(
      `${op}: dtype f16 needs the device feature "shader-f16", which "${x.device.info.label}" lacks`,
    );
  }
  const y = Tensor.empty(x.device, x.shape, dtype, op);
  const n = x.numel();
  // Four elements a lane where the count allows: an f16 vec4 is one 8-byte load.
  const v4 = n % 4 === 0;
  if (n > 0) {
    launch1d({
      op,
      args: [{ name: "x", t: x, vec4: v4 }, { name: "y", t: y, write: true, vec4: v4 }],
      n: v4 ? n / 4 : n,
      body: `  y_st(gid, x_ld(gid));`,
      work: { bytes: n * (x.dtype === "f16" ? 2 : 4) + n * (dtype === "f16" ? 2 : 4) },
    });
  }
  return record(op, y, [x], [], castBackward);
}

/** A cast's gradient: f32 whatever the direction (master weights and their gradients are f32), passed through. */
const castBackward = (g: Tensor) => [g.dtype === "f32" ? g.share() : castFloat(g, "f32")];

/**
 * An f16 copy of a parameter for autocast (as `castFloat(w, "f16")`, same gradient), kept with the
 * parameter's storage and made again only after the parameter changed (any kernel writing it, `assign`,
 * `Tensor.written`): an inference model's weights are cast once, not in every forward. In training AdamW
 * rewrites the copy with the new weights in its update (optim/adamw.ts), so no step casts them.
 */
export function castWeight(w: Tensor): Tensor {
  const op = "F.cast";
  const s = w.storage(op);
  let d = s.derived;
  if (!d || d.version !== s.version || d.t.shape.join() !== w.shape.join() || d.t.dtype !== "f16") {
    s.derived?.t.dispose();
    s.derived = null;
    // Made outside autograd and kept out of scopes: the cache owns it until the storage goes.
    const t = noGrad(() => castFloat(w, "f16"));
    keep(t);
    d = s.derived = { version: s.version, t };
  }
  const h = d.t.share();
  track(h);
  return record(op, h, [w], [], castBackward);
}

/** The autocast state: the low-precision dtype in force, or null. */
let autocastDtype: "f16" | null = null;
const warned = new WeakSet<Device>();

/**
 * Runs `fn` with mixed precision on (like `torch.autocast(dtype=torch.float16)`): nn.Conv3d and nn.Linear
 * compute in f16 with f32 accumulation and f32 outputs. `dtype` null runs it with autocast off. Async
 * functions are awaited before the previous state is restored.
 */
export function autocast<T>(fn: () => T, dtype: "f16" | null = "f16"): T {
  const prev = autocastDtype;
  autocastDtype = dtype;
  let r: T;
  try {
    r = fn();
  } catch (e) {
    autocastDtype = prev;
    throw e;
  }
  if (r instanceof Promise) {
    return r.finally(() => {
      autocastDtype = prev;
    }) as T;
  }
  autocastDtype = prev;
  return r;
}

/** Turns autocast on ("f16") or off (null) until changed; returns the previous state. */
export function setAutocast(dtype: "f16" | null): "f16" | null {
  if (dtype !== null && dtype !== "f16") {
    throw new Error(`setAutocast: dtype must be "f16" or null, got ${dtype}`);
  }
  const prev = autocastDtype;
  autocastDtype = dtype;
  return prev;
}

/**
 * The dtype a layer on `device` should compute in now: "f16" under autocast when the device has
 * `shader-f16`, else null. Without the feature autocast is a no-op, with one warning per device.
 */
export function autocastFor(device: Device): DType | null {
  if (autocastDtype === null) return null;
  if (hasF16(device)) return autocastDtype;
  if (!warned.has(device)) {
    warned.add(device);
    console.warn(`autocast: "${device.info.label}" has no shader-f16; computing in f32`);
  }
  return null;
}
