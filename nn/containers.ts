/**
 * @file `nn.ModuleList`: children held by index, as PyTorch's `nn.ModuleList`.
 */
import type { Tensor } from "../core/tensor.ts";
import { Module } from "./module.ts";

/**
 * Holds modules under the names "0", "1", ... (so state-dict keys read `stages.3.conv.weight`), without a
 * forward of its own: the owner decides how to call them. A `null` slot keeps its index but registers
 * nothing, for positions that hold a parameterless op in the source model (e.g. the upsampling at
 * `layer.0` before the conv at `layer.1`).
 */
export class ModuleList<M extends Module = Module> extends Module {
  readonly #items: (M | null)[] = [];

  constructor(modules: Iterable<M | null> = []) {
    super();
    for (const m of modules) this.append(m);
  }

  /** Adds `m` (or a hole) at the next index; returns this. */
  append(m: M | null): this {
    const i = this.#items.length;
    this.#items.push(m);
    if (m) this.registerModule(String(i), m);
    return this;
  }

  /** Number of slots, holes included. */
  get length(): number {
    return this.#items.length;
  }

  /** The module at index `i` (negative counts from the end); null for a hole. */
  at(i: number): M | null {
    const j = i < 0 ? i + this.#items.length : i;
    if (!Number.isInteger(j) || j < 0 || j >= this.#items.length) {
      throw new Error(`ModuleList: index ${i} out of range for length ${this.#items.length}`);
    }
    return this.#items[j];
  }

  /** The modules in index order, holes skipped. */
  *[Symbol.iterator](): Iterator<M> {
    for (const m of this.#items) if (m) yield m;
  }

  /** A ModuleList is a container; calling it is a mistake, as in PyTorch. */
  forward(_x: Tensor): Tensor {
    throw new Error("ModuleList has no forward: call its modules (list.at(i).forward(x), or iterate)");
  }
}
