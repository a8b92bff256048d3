/**
 * @file Memory scopes. Every tensor is registered in the innermost open scope when it is created;
 * {@link tidy} disposes, when its function returns, every tensor created inside that was neither returned
 * nor kept. A training step wrapped in `tidy` therefore frees all of its intermediates.
 */

/** Anything that can be disposed by a scope. */
export interface Disposable {
  dispose(): void;
  readonly disposed: boolean;
}

const scopes: Set<Disposable>[] = [];

/** Registers a new tensor in the innermost scope (called by the Tensor constructor). */
export function track(t: Disposable): void {
  if (scopes.length) scopes[scopes.length - 1].add(t);
}

/** Removes a tensor from every open scope so that it outlives them (parameters, gradients, state). */
export function keep<T extends Disposable>(t: T): T {
  for (const s of scopes) s.delete(t);
  return t;
}

function collect(x: unknown, out: Set<Disposable>, depth = 0): void {
  if (x === null || typeof x !== "object" || depth > 8) return;
  if ("dispose" in x && "disposed" in x && typeof (x as Disposable).dispose === "function") {
    out.add(x as Disposable);
    return;
  }
  if (Array.isArray(x)) { for (const v of x) collect(v, out, depth + 1); }
  else if (x instanceof Map) { for (const v of x.values()) collect(v, out, depth + 1); }
  else if (Object.getPrototypeOf(x) === Object.prototype) {
    for (const v of Object.values(x)) collect(v, out, depth + 1);
  }
}

function close(scope: Set<Disposable>, result: unknown): void {
  const i = scopes.lastIndexOf(scope);
  if (i >= 0) scopes.splice(i, 1);
  const returned = new Set<Disposable>();
  collect(result, returned);
  const parent = scopes[scopes.length - 1];
  for (const t of scope) {
    if (returned.has(t)) parent?.add(t);
    else t.dispose();
  }
}

/**
 * Runs `fn` in a new scope and disposes every tensor created in it except those reachable from its result
 * (a tensor, or arrays / plain objects / Maps of them), which move to the enclosing scope. An async `fn` is
 * awaited before the scope closes; do not interleave two async scopes.
 */
export function tidy<T>(fn: () => T): T {
  const scope = new Set<Disposable>();
  scopes.push(scope);
  let result: T;
  try {
    result = fn();
  } catch (e) {
    close(scope, undefined);
    throw e;
  }
  if (result instanceof Promise) {
    return result.then(
      (v) => {
        close(scope, v);
        return v;
      },
      (e) => {
        close(scope, undefined);
        throw e;
      },
    ) as T;
  }
  close(scope, result);
  return result;
}
