/**
 * @file `nn.Module`: named parameters, buffers and children; state dicts with PyTorch's dotted names;
 * train/eval mode. Parameters and buffers are kept out of `tidy` scopes (they live until `dispose()`).
 */
import { keep } from "../core/scope.ts";
import type { Tensor } from "../core/tensor.ts";

/** A map from dotted names (`layer1.0.conv1.conv.weight`) to tensors. */
export type StateDict = Record<string, Tensor>;

/** Options of {@link Module.loadStateDict}. */
export interface LoadOptions {
  /** Require exactly the module's keys (default true); otherwise load the intersection. */
  strict?: boolean;
}

/** Base class of layers and models. Subclasses register parameters, buffers and children, and define forward. */
export abstract class Module {
  /** Training mode (BatchNorm uses batch statistics, Dropout drops). */
  training = true;
  #params = new Map<string, Tensor | null>();
  #buffers = new Map<string, Tensor | null>();
  #children = new Map<string, Module>();

  /** Registers a parameter (kept out of scopes, marked as requiring grad). */
  protected registerParameter(name: string, t: Tensor | null): Tensor | null {
    if (t) {
      keep(t);
      t.requireGrad();
    }
    this.#params.set(name, t);
    return t;
  }

  /** Registers a buffer: state that is saved but not trained (running statistics). */
  protected registerBuffer(name: string, t: Tensor | null): Tensor | null {
    if (t) keep(t);
    this.#buffers.set(name, t);
    return t;
  }

  /** Registers a child module under `name`. */
  protected registerModule<M extends Module>(name: string, m: M): M {
    this.#children.set(name, m);
    return m;
  }

  /** Removes the child registered under `name` (a module replaced by a transformation, e.g. a folded norm). */
  protected removeModule(name: string): void {
    this.#children.delete(name);
  }

  /** This module and every descendant with dotted names (PyTorch's `named_modules`; this one is ""). */
  namedModules(prefix = ""): [string, Module][] {
    const out: [string, Module][] = [[prefix, this]];
    for (const [k, m] of this.#children) out.push(...m.namedModules(prefix ? `${prefix}.${k}` : k));
    return out;
  }

  /** Direct children with their names. */
  namedChildren(): [string, Module][] {
    return [...this.#children];
  }

  /** The parameter or buffer registered under a local name (for subclasses and tests). */
  protected local(name: string): Tensor | null {
    return this.#params.get(name) ?? this.#buffers.get(name) ?? null;
  }

  /** All parameters with dotted names, depth first in registration order. */
  namedParameters(prefix = ""): [string, Tensor][] {
    const out: [string, Tensor][] = [];
    for (const [k, t] of this.#params) if (t) out.push([prefix + k, t]);
    for (const [k, m] of this.#children) out.push(...m.namedParameters(`${prefix}${k}.`));
    return out;
  }

  /** All parameters. */
  parameters(): Tensor[] {
    return this.namedParameters().map(([, t]) => t);
  }

  /** All buffers with dotted names. */
  namedBuffers(prefix = ""): [string, Tensor][] {
    const out: [string, Tensor][] = [];
    for (const [k, t] of this.#buffers) if (t) out.push([prefix + k, t]);
    for (const [k, m] of this.#children) out.push(...m.namedBuffers(`${prefix}${k}.`));
    return out;
  }

  /** Parameters and buffers by dotted name, in PyTorch's order (a module's own entries, then its children). */
  stateDict(prefix = ""): StateDict {
    const out: StateDict = {};
    const own = new Map([...this.#params, ...this.#buffers]);
    // PyTorch lists a module's parameters, then its buffers, then recurses.
    for (const [k, t] of this.#params) if (t) out[prefix + k] = t;
    for (const [k, t] of this.#buffers) if (t && own.has(k)) out[prefix + k] = t;
    for (const [k, m] of this.#children) Object.assign(out, m.stateDict(`${prefix}${k}.`));
    return out;
  }

  /**
   * Copies tensors from `sd` into this module's parameters and buffers in place (so optimizers keep
   * working). Strict mode reports missing keys, unexpected keys and shape mismatches together in one error.
   */
  loadStateDict(sd: StateDict, opts: LoadOptions = {}): { missing: string[]; unexpected: string[] } {
    const strict = opts.strict ?? true;
    const mine = this.stateDict();
    const missing = Object.keys(mine).filter((k) => !(k in sd));
    const unexpected = Object.keys(sd).filter((k) => !(k in mine));
    const mismatched: string[] = [];
    for (const [k, t] of Object.entries(mine)) {
      const s = sd[k];
      if (!s) continue;
      if (s.shape.join() !== t.shape.join()) {
        mismatched.push(`${k}: checkpoint [${s.shape}] vs model [${t.shape}]`);
      }
    }
    if (mismatched.length || (strict && (missing.length || unexpected.length))) {
      const parts: string[] = [];
      if (missing.length) {
        parts.push(
          `missing keys (${missing.length}): ${missing.slice(0, 20).join(", ")}${
            missing.length > 20 ? ", ..." : ""
          }`,
        );
      }
      if (unexpected.length) {
        parts.push(
          `unexpected keys (${unexpected.length}): ${unexpected.slice(0, 20).join(", ")}${
            unexpected.length > 20 ? ", ..." : ""
          }`,
        );
      }
      if (mismatched.length) parts.push(`shape mismatches (${mismatched.length}): ${mismatched.join("; ")}`);
      throw new Error(`loadStateDict: ${parts.join("; ")}`);
    }
    for (const [k, t] of Object.entries(mine)) {
      const s = sd[k];
      if (!s) continue;
      if (s.dtype !== t.dtype) {
        throw new Error(
          `loadStateDict: ${k} has dtype ${s.dtype} in the state dict but ${t.dtype} in the model`,
        );
      }
      t.assign(s);
    }
    return { missing, unexpected };
  }

  /** Sets training mode recursively; returns this. */
  train(mode = true): this {
    this.training = mode;
    for (const m of this.#children.values()) m.train(mode);
    return this;
  }

  /** Sets eval mode recursively; returns this. */
  eval(): this {
    return this.train(false);
  }

  /** Frees every parameter and buffer (and their gradients). */
  dispose(): void {
    for (const t of this.#params.values()) t?.dispose();
    for (const t of this.#buffers.values()) t?.dispose();
    for (const m of this.#children.values()) m.dispose();
  }

  /** The computation. */
  abstract forward(...inputs: Tensor[]): Tensor;
}
