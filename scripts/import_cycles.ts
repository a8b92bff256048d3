/**
 * @file Finds import cycles between the repo's TypeScript files. Follows the relative specifiers of static
 * `import`/`export ... from` statements, groups the files into strongly connected components and prints one
 * cycle through each component that has more than one file (or imports itself). Exits 1 if there is any.
 * Type-only imports count too (a cycle of types is still a layering knot; they are marked `type`), unless
 * `--runtime` is given: then only the cycles that exist at load time are reported.
 *
 *   deno run --allow-read scripts/import_cycles.ts [--runtime] [root]
 */

const SKIP = new Set(["node_modules", "vendor"]);

/** Every .ts file below `dir`, skipping hidden and vendored folders. */
function tsFiles(dir: string, out: string[] = []): string[] {
  for (const e of Deno.readDirSync(dir)) {
    const p = `${dir}/${e.name}`;
    if (e.isDirectory && !SKIP.has(e.name) && !e.name.startsWith(".")) tsFiles(p, out);
    else if (e.isFile && e.name.endsWith(".ts")) out.push(p);
  }
  return out;
}

/** One edge: the imported file and whether the statement only carries types. */
interface Edge {
  to: string;
  typeOnly: boolean;
}

// Statements start a line (deno fmt puts them there); the clause may span lines but holds no `;`, `(` or
// `=`, so code and WGSL in template strings do not match. Dynamic import() is lazy and is not followed.
const STATEMENT = /^(import|export)\s+(type\s+)?(?:([\w*{}\s,$]+?)\s+from\s+)?["'](\.\.?\/[^"']+)["']/gm;

function importsOf(file: string): Edge[] {
  const text = Deno.readTextFileSync(file);
  const edges: Edge[] = [];
  for (const m of text.matchAll(STATEMENT)) {
    const [, kind, typeKw, clause, spec] = m;
    if (kind === "export" && clause === undefined) continue; // `export "x"` is not a statement
    const names = clause?.match(/\{([^}]*)\}/)?.[1].split(",").map((s) => s.trim()).filter(Boolean) ?? [];
    const typeOnly = !!typeKw ||
      (!!clause && /^\{/.test(clause.trim()) && names.length > 0 &&
        names.every((n) => n.startsWith("type ")));
    edges.push({ to: decodeURIComponent(new URL(spec, `file://${file}`).pathname), typeOnly });
  }
  return edges;
}

/** Strongly connected components (Tarjan), iteratively. */
function components(nodes: string[], graph: Map<string, Edge[]>): string[][] {
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const onStack = new Set<string>();
  const stack: string[] = [];
  const out: string[][] = [];
  let next = 0;
  for (const root of nodes) {
    if (index.has(root)) continue;
    const work: [string, number][] = [[root, 0]];
    index.set(root, next);
    low.set(root, next++);
    stack.push(root);
    onStack.add(root);
    while (work.length) {
      const top = work[work.length - 1];
      const [v, i] = top;
      const edges = graph.get(v) ?? [];
      if (i < edges.length) {
        top[1]++;
        const w = edges[i].to;
        if (!graph.has(w)) continue;
        if (!index.has(w)) {
          index.set(w, next);
          low.set(w, next++);
          stack.push(w);
          onStack.add(w);
          work.push([w, 0]);
        } else if (onStack.has(w)) low.set(v, Math.min(low.get(v)!, index.get(w)!));
        continue;
      }
      work.pop();
      if (work.length) {
        const u = work[work.length - 1][0];
        low.set(u, Math.min(low.get(u)!, low.get(v)!));
      }
      if (low.get(v) === index.get(v)) {
        const comp: string[] = [];
        let w: string;
        do {
          w = stack.pop()!;
          onStack.delete(w);
          comp.push(w);
        } while (w !== v);
        out.push(comp);
      }
    }
  }
  return out;
}

/** A shortest cycle through `start` inside `comp` (breadth-first), as the edges taken. */
function cycleThrough(start: string, comp: Set<string>, graph: Map<string, Edge[]>): Edge[] {
  const prev = new Map<string, { from: string; edge: Edge }>();
  const queue = [start];
  while (queue.length) {
    const v = queue.shift()!;
    for (const e of graph.get(v) ?? []) {
      if (!comp.has(e.to)) continue;
      if (e.to === start) {
        const path = [e];
        for (let w = v; w !== start; w = prev.get(w)!.from) path.unshift(prev.get(w)!.edge);
        return path;
      }
      if (!prev.has(e.to)) {
        prev.set(e.to, { from: v, edge: e });
        queue.push(e.to);
      }
    }
  }
  return [];
}

if (import.meta.main) {
  const runtime = Deno.args.includes("--runtime");
  const root = Deno.realPathSync(Deno.args.find((a) => !a.startsWith("--")) ?? ".");
  const files = tsFiles(root).sort();
  const graph = new Map(files.map((f) => [f, importsOf(f).filter((e) => !(runtime && e.typeOnly))]));
  const rel = (f: string) => f.slice(root.length + 1);
  let cycles = 0;
  for (const comp of components(files, graph)) {
    const self = comp.length === 1 && graph.get(comp[0])!.some((e) => e.to === comp[0]);
    if (comp.length < 2 && !self) continue;
    cycles++;
    const start = [...comp].sort()[0];
    const path = cycleThrough(start, new Set(comp), graph);
    const steps = path.map((e) => `${e.typeOnly ? " -(type)-> " : " -> "}${rel(e.to)}`).join("");
    console.log(`cycle among ${comp.length} file(s): ${rel(start)}${steps}`);
    if (comp.length > path.length) console.log(`  component: ${comp.map(rel).sort().join(", ")}`);
  }
  const what = runtime ? "runtime import cycle" : "import cycle";
  console.log(
    cycles ? `${cycles} ${what}(s) in ${files.length} files` : `no ${what}s in ${files.length} files`,
  );
  if (cycles) Deno.exit(1);
}
