/**
 * @file Tape-based reverse-mode autograd.
 *
 * Each differentiable op that sees an input requiring grad attaches a {@link Node} to its output: the
 * backward closure written beside the op's forward, the tensors it saved, and edges to the inputs' nodes (or
 * to leaf tensors, whose `.grad` accumulates). Nodes are reference counted: the output tensor holds one
 * reference and every consumer node one more, so disposing the last tensor of a graph frees its saved
 * activations even if `backward()` never ran; `backward()` frees them as it goes.
 */
import { keep, tidy } from "./scope.ts";

/**
 * What autograd needs of a tensor. core/tensor.ts's `Tensor` implements it; it is declared here, not
 * imported, so that the tensor and the tape do not depend on each other in both directions.
 */
export interface GradTensor {
  readonly shape: readonly number[];
  requiresGrad: boolean;
  grad: GradTensor | null;
  node: Node | null;
  readonly disposed: boolean;
  dispose(): void;
  share(): GradTensor;
  describe(): string;
  numel(): number;
}

let gradEnabled = true;

/** Whether ops currently record the tape. */
export function isGradEnabled(): boolean {
  return gradEnabled;
}

/** Runs `fn` without recording gradients (like `torch.no_grad()`); async functions are awaited. */
export function noGrad<T>(fn: () => T): T {
  const prev = gradEnabled;
  gradEnabled = false;
  let r: T;
  try {
    r = fn();
  } catch (e) {
    gradEnabled = prev;
    throw e;
  }
  if (r instanceof Promise) {
    return r.finally(() => {
      gradEnabled = prev;
    }) as T;
  }
  gradEnabled = prev;
  return r;
}

/** Where a gradient flows: into another node, or into a leaf tensor's `.grad`. */
interface Edge {
  node: Node | null;
  leaf: GradTensor | null;
  shape: readonly number[];
}

/**
 * Backward closure: receives the output gradient and the saved tensors, returns one gradient per input.
 * `pending(i)` hands over the gradient input i's producer has already received from its other consumers (or
 * null): a closure that takes it must return input i's gradient with it added (a GEMM adds it as it stores,
 * saving the add pass); autograd frees the taken tensor afterwards.
 */
export type BackwardFn<T extends GradTensor = GradTensor> = (
  grad: T,
  saved: T[],
  pending: (i: number) => T | null,
) => (T | null)[];

/** One recorded op. */
export class Node {
  refs = 1;
  #saved: GradTensor[];
  #freed = false;

  constructor(
    readonly name: string,
    readonly edges: (Edge | null)[],
    readonly fn: BackwardFn,
    saved: GradTensor[],
  ) {
    this.#saved = saved;
    for (const e of edges) if (e?.node) e.node.refs++;
  }

  /** The saved tensors (throws if they were freed by a previous backward). */
  saved(): GradTensor[] {
    if (this.#freed) {
      throw new Error(
        `backward: ${this.name}'s saved tensors were freed by a previous backward(); ` +
          `pass {retainGraph: true} to the first backward() to backpropagate twice`,
      );
    }
    return this.#saved;
  }

  /** Frees the saved tensors (after backward, or when the graph dies). */
  freeSaved(): void {
    if (this.#freed) return;
    this.#freed = true;
    for (const t of this.#saved) t.dispose();
    this.#saved = [];
  }

  /** Drops one reference; at zero the node frees its saved tensors and releases its inputs' nodes. */
  unref(): void {
    if (--this.refs > 0) return;
    this.freeSaved();
    for (const e of this.edges) e?.node?.unref();
  }
}

/** Ops needed by the engine, registered by the kernels module to avoid an import cycle. */
export interface GradOps {
  add(a: GradTensor, b: GradTensor): GradTensor;
  onesLike(t: GradTensor): GradTensor;
}
let ops: GradOps | null = null;

/** Called once by the kernels module. */
export function registerGradOps(o: GradOps): void {
  ops = o;
}

/**
 * Attaches a backward node to `out` when grad mode is on and some input requires grad. `save` lists tensors
 * the backward needs; they are kept alive (sharing storage) until the node is freed.
 */
export function record<T extends GradTensor>(
  name: string,
  out: T,
  inputs: readonly (T | null)[],
  save: T[],
  fn: BackwardFn<T>,
): T {
  if (!gradEnabled || !inputs.some((t) => t?.requiresGrad)) return out;
  const edges = inputs.map((t): Edge | null => {
    if (!t || !t.requiresGrad) return null;
    return t.node ? { node: t.node, leaf: null, shape: t.shape } : { node: null, leaf: t, shape: t.shape };
  });
  const saved = save.map((t) => t.share());
  out.node = new Node(name, edges, fn as unknown as BackwardFn, saved);
  out.requiresGrad = true;
  return out;
}

function accumulateLeaf(leaf: GradTensor, g: GradTensor): void {
  if (leaf.disposed) {
    g.dispose();
    return;
  }
  if (leaf.grad && !leaf.grad.disposed) {
    const sum = ops!.add(leaf.grad, g);
    leaf.grad.dispose();
    g.dispose();
    leaf.grad = keep(sum);
  } else {
    leaf.grad = keep(g);
  }
}

/** Options of `Tensor.backward`. */
export interface BackwardOptions {
  /** Keep saved tensors so that the graph can be backpropagated again. */
  retainGraph?: boolean;
}

/** Runs reverse-mode differentiation from `root`, accumulating into the leaves' `.grad`. */
export function backward(root: GradTensor, grad?: GradTensor, opts: BackwardOptions = {}): void {
  if (!ops) throw new Error("backward: kernels not loaded (import mod.ts)");
  if (!root.requiresGrad) {
    throw new Error(`backward: tensor ${root.describe()} does not require grad (no input had requiresGrad)`);
  }
  if (grad && grad.shape.join() !== root.shape.join()) {
    throw new Error(`backward: gradient shape [${grad.shape}] does not match tensor shape [${root.shape}]`);
  }
  if (!grad && root.numel() !== 1) {
    throw new Error(`backward: grad can be implied only for a single-element tensor, got ${root.describe()}`);
  }
  noGrad(() => {
    const seed = grad ? grad.share() : ops!.onesLike(root);
    if (!root.node) {
      accumulateLeaf(root, seed);
      return;
    }
    const grads = new Map<Node, GradTensor>([[root.node, seed]]);
    try {
      for (const n of topologicalOrder(root.node)) {
        const g = grads.get(n);
        if (!g) continue;
        grads.delete(n);
        routeGradients(n, nodeGradients(n, g, grads), grads);
        if (!opts.retainGraph) n.freeSaved();
      }
    } finally {
      for (const g of grads.values()) g.dispose();
    }
  });
}

/** The nodes reachable from `root`, each before every node it depends on (iterative DFS post-order, reversed). */
function topologicalOrder(root: Node): Node[] {
  const order: Node[] = [];
  const seen = new Set<Node>([root]);
  const stack: [Node, number][] = [[root, 0]];
  while (stack.length) {
    const top = stack[stack.length - 1];
    const [n, i] = top;
    if (i < n.edges.length) {
      top[1]++;
      const next = n.edges[i]?.node;
      if (next && !seen.has(next)) {
        seen.add(next);
        stack.push([next, 0]);
      }
    } else {
      order.push(n);
      stack.pop();
    }
  }
  return order.reverse();
}

/**
 * Runs node `n`'s backward closure on its output gradient `g` (disposed here): one gradient (or null) per
 * input, each its own handle, with the gradients the closure took over from `grads` folded in.
 */
function nodeGradients(n: Node, g: GradTensor, grads: Map<Node, GradTensor>): (GradTensor | null)[] {
  let results: (GradTensor | null)[];
  // Gradients the closure took over from `grads` (see BackwardFn's `pending`), by input.
  const taken = new Map<number, GradTensor>();
  const pending = (i: number): GradTensor | null => {
    const e = n.edges[i];
    const p = e?.node ? grads.get(e.node) : undefined;
    if (!e?.node || !p || taken.has(i)) return null;
    grads.delete(e.node);
    taken.set(i, p);
    return p;
  };
  try {
    // Backward closures may return `g` itself or one tensor for several inputs: give each its own handle.
    // A scope per node frees the closure's temporaries (reshapes, masks) and keeps what it returns.
    const raw = tidy(() => n.fn(g, n.saved(), pending));
    const used = new Set<GradTensor>();
    results = raw.map((r) => {
      if (!r) return null;
      if (r === g || used.has(r)) return r.share();
      used.add(r);
      return r;
    });
  } finally {
    g.dispose();
  }
  for (const [i, p] of taken) {
    // Included in the closure's gradient for input i; if it returned none, the taken one stands.
    if (results[i]) p.dispose();
    else results[i] = p;
  }
  return results;
}

/** Hands each input's gradient on: into a leaf's `.grad`, or summed into its node's entry of `grads`. */
function routeGradients(n: Node, results: (GradTensor | null)[], grads: Map<Node, GradTensor>): void {
  for (let i = 0; i < n.edges.length; i++) {
    const e = n.edges[i];
    const r = results[i] ?? null;
    if (!e || !r) {
      r?.dispose();
      continue;
    }
    if (r.shape.join() !== e.shape.join()) {
      throw new Error(
        `backward: ${n.name} produced a gradient of shape [${r.shape}] for an input of shape [${e.shape}]`,
      );
    }
    if (e.leaf) accumulateLeaf(e.leaf, r);
    else {
      const prev = grads.get(e.node!);
      if (prev) {
        grads.set(e.node!, ops!.add(prev, r));
        prev.dispose();
        r.dispose();
      } else grads.set(e.node!, r);
    }
  }
}
