/**
 * @file A table-driven check against PyTorch: each case names a Python expression and the same computation
 * with our ops; inputs are seeded random data; outputs and the gradients of every f32 input (for a random
 * output gradient) must match.
 */
import { type Tensor, tensor, tidy } from "../mod.ts";
import type { Device } from "../core/device.ts";
import { assertClose, prng, randData, type RefCase, type RefResult, torchRef } from "./helpers.ts";

/** One input of a case. */
export interface In {
  shape: number[];
  dtype?: "f32" | "i32" | "u8";
  lo?: number;
  hi?: number;
  /** Round values to integers (creates ties for max/min/maximum). */
  ints?: boolean;
  grad?: boolean;
}

/** One case: a PyTorch expression over inputs a, b, c, ... and our equivalent. */
export interface Case {
  name: string;
  inputs: In[];
  py: string;
  ts: (...x: Tensor[]) => Tensor;
  rtol?: number;
  /** Absolute tolerance of the forward (default: assertClose's, 1e-5 of the largest value). */
  atol?: number;
  /** Too large for the split device (its 32-binding or 64-workgroup limits; tested on the default device only). */
  big?: boolean;
}

/** An f32 input that requires grad. */
export const f = (shape: number[], o: Partial<In> = {}): In => ({ shape, grad: true, ...o });
/** A positive f32 input that requires grad. */
export const pos = (shape: number[]): In => f(shape, { lo: 0.2, hi: 3 });

type Built = {
  c: Case;
  inputs: { data: number[]; shape: number[]; dtype: "f32" | "i32" | "u8"; grad: boolean }[];
};

/** Builds the data of every case once and asks PyTorch once; `check` runs them on a device. */
export class CaseSuite {
  #built: Built[];
  #refs: RefResult[] | null = null;
  #gradOuts: (number[] | undefined)[] = [];

  constructor(cases: Case[], seed: number) {
    const rng = prng(seed);
    this.#built = cases.map((c) => {
      const inputs = c.inputs.map((i) => {
        const n = i.shape.reduce((p, d) => p * d, 1);
        let data = randData(rng, n, i.lo ?? -2, i.hi ?? 2);
        if (i.ints || i.dtype === "i32" || i.dtype === "u8") data = data.map((v) => Math.floor(v));
        return {
          data,
          shape: i.shape,
          dtype: i.dtype ?? "f32",
          grad: (i.grad ?? false) && (i.dtype ?? "f32") === "f32",
        };
      });
      return { c, inputs };
    });
  }

  async #reference(): Promise<RefResult[]> {
    if (this.#refs) return this.#refs;
    const built = this.#built;
    // First pass: forward only, to learn output shapes; then again with an output gradient.
    const fwd = await torchRef(built.map(({ c, inputs }) => ({ expr: c.py, inputs }) as RefCase));
    const grng = prng(99);
    this.#gradOuts = fwd.map((r, k) => {
      if (r.error) throw new Error(`torch failed on "${built[k].c.name}": ${r.error}`);
      const needs = built[k].inputs.some((i) => i.grad) && r.out.dtype === "f32";
      return needs ? randData(grng, r.out.data.length) : undefined;
    });
    this.#refs = await torchRef(
      built.map(({ c, inputs }, k) => ({
        expr: c.py,
        inputs,
        grad_out: this.#gradOuts[k] ? { data: this.#gradOuts[k]!, shape: fwd[k].out.shape } : null,
      })),
    );
    return this.#refs;
  }

  /**
   * Runs every case (one test step each) on `device`; `split` skips the cases marked `big`, `only` the cases
   * whose name it refuses.
   */
  async check(
    t: Deno.TestContext,
    device: Device,
    split = false,
    only?: (name: string) => boolean,
  ): Promise<void> {
    const ref = await this.#reference();
    for (let k = 0; k < this.#built.length; k++) {
      const { c, inputs } = this.#built[k];
      if ((split && c.big) || (only && !only(c.name))) continue;
      const gradOut = this.#gradOuts[k];
      await t.step(c.name, async () => {
        const r = ref[k];
        if (r.error) throw new Error(`torch: ${r.error}`);
        const ours = await tidy(async () => {
          const xs = inputs.map((i) =>
            tensor(i.data, i.shape, { device, dtype: i.dtype, requiresGrad: i.grad })
          );
          const y = c.ts(...xs);
          const out = { shape: [...y.shape], dtype: y.dtype, data: Array.from(await y.toArray()) };
          const grads: (number[] | null)[] = [];
          if (gradOut && y.requiresGrad) {
            y.backward(tensor(gradOut, [...y.shape], { device }));
            for (const x of xs) grads.push(x.grad ? Array.from(await x.grad.toArray()) : null);
          }
          return { out, grads };
        });
        if (ours.out.shape.join() !== r.out.shape.join()) {
          throw new Error(`shape [${ours.out.shape}] != torch [${r.out.shape}]`);
        }
        if (ours.out.dtype !== r.out.dtype) {
          throw new Error(`dtype ${ours.out.dtype} != torch ${r.out.dtype}`);
        }
        if (r.out.dtype === "f32") assertClose(ours.out.data, r.out.data, "forward", c.rtol ?? 1e-4, c.atol);
        else assertClose(ours.out.data, r.out.data, "forward", 0, 0);
        if (gradOut) {
          inputs.forEach((i, j) => {
            if (!i.grad) return;
            const g = ours.grads[j];
            if (!g) throw new Error(`no gradient for input ${j}`);
            assertClose(g, r.grads[j]!, `grad of input ${j}`, c.rtol ?? 1e-4);
          });
        }
      });
    }
  }
}
