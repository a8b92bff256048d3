/**
 * The engine boundary: `mod.ts` must load where only web APIs exist (a browser bundle, a Worker without
 * permissions). Checked two ways:
 *
 * 1. Statically: the relative-import graph of mod.ts (static `import`/`export ... from` and dynamic
 *    `import("...")`, comments stripped) must not use the `Deno.` namespace, must not import anything but
 *    relative modules (no `npm:`, `node:`, `jsr:`, URLs, or bare names that deno.json maps to npm), and must
 *    not reach data/ or the file layer io/files.ts. Feature-detected access through `globalThis` (the device's
 *    optional env lookup) is allowed: it cannot fail where there is no Deno. The walk is cross-checked
 *    against `deno info --json`, and run on the pipeline's entries to show it does catch violations.
 * 2. At run time: a Worker started with every permission denied (read included: Deno loads the Worker's
 *    modules itself, so the engine needs no read access) imports mod.ts, opens a WebGPU device, loads
 *    weights from safetensors bytes and runs a tiny CSN classifier forward; its output must equal the same
 *    forward in the main thread (rtol 1e-5).
 */
import { io, models, nn, noGrad, openDevice, tensor, tidy } from "../mod.ts";
import { assertClose, prng, randData } from "./helpers.ts";
import type { WorkerRequest } from "./fixtures/engine_worker.ts";

const ROOT = new URL("../", import.meta.url);
const rel = (u: URL) => u.pathname.slice(ROOT.pathname.length);

/** The source with comments removed (strings, template literals and regex literals kept verbatim). */
function stripComments(src: string): string {
  let out = "";
  let i = 0;
  const braces: number[] = []; // brace depth at each open template `${`
  let depth = 0;
  let prev = ""; // last significant code character, to tell a regex literal from a division
  const copyString = (q: string) => {
    const start = i++;
    while (i < src.length && src[i] !== q) i += src[i] === "\\" ? 2 : 1;
    out += src.slice(start, ++i);
  };
  const copyTemplate = () => {
    // From just after a backtick (or a closing `}` of a substitution) to the closing backtick or the next `${`.
    const start = i;
    while (i < src.length && src[i] !== "`" && !(src[i] === "$" && src[i + 1] === "{")) {
      i += src[i] === "\\" ? 2 : 1;
    }
    if (src[i] === "`") {
      out += src.slice(start, ++i);
    } else {
      out += src.slice(start, i += 2);
      braces.push(depth++);
    }
    prev = "x";
  };
  while (i < src.length) {
    const c = src[i], n = src[i + 1];
    if (c === "/" && n === "/") {
      while (i < src.length && src[i] !== "\n") i++;
    } else if (c === "/" && n === "*") {
      const end = src.indexOf("*/", i + 2);
      i = end < 0 ? src.length : end + 2;
      out += " ";
    } else if (c === '"' || c === "'") {
      copyString(c);
      prev = "x";
    } else if (c === "`") {
      out += src[i++];
      copyTemplate();
    } else if (c === "/" && (prev === "" || "(,=:[!&|?{};+-*%<>~^".includes(prev))) {
      const start = i++;
      let inClass = false;
      while (i < src.length && (inClass || src[i] !== "/")) {
        if (src[i] === "\\") i++;
        else if (src[i] === "[") inClass = true;
        else if (src[i] === "]") inClass = false;
        i++;
      }
      out += src.slice(start, ++i);
      prev = "x";
    } else {
      if (c === "{") depth++;
      if (c === "}") {
        depth--;
        if (braces.length && braces[braces.length - 1] === depth) {
          braces.pop();
          out += src[i++];
          copyTemplate();
          continue;
        }
      }
      if (!/\s/.test(c)) prev = c;
      out += c;
      i++;
    }
  }
  return out;
}

const SPECIFIER = [
  /\b(?:import|export)\s[^;]*?\bfrom\s*["']([^"']+)["']/g,
  /\bimport\s*["']([^"']+)["']/g,
  /\bimport\s*\(\s*["']([^"']+)["']\s*\)/g,
];

/** Walks the relative imports from `entry`; returns every reached file and the rule violations. */
async function walk(entry: URL): Promise<{ files: Set<string>; problems: string[] }> {
  const files = new Set<string>(), problems: string[] = [];
  const todo = [entry];
  while (todo.length) {
    const url = todo.pop()!;
    const name = rel(url);
    if (files.has(name)) continue;
    files.add(name);
    if (name.startsWith("data/")) problems.push(`${name}: the data layer is reached`);
    if (name === "io/files.ts") problems.push(`${name}: the file layer is reached`);
    const code = stripComments(await Deno.readTextFile(url));
    const line = (at: number) => code.slice(0, at).split("\n").length;
    for (const m of code.matchAll(/\bDeno\./g)) {
      problems.push(`${name}: uses the Deno namespace ("${code.slice(m.index, m.index + 24)}...")`);
    }
    for (const re of SPECIFIER) {
      for (const m of code.matchAll(re)) {
        const spec = m[1];
        if (spec.startsWith("./") || spec.startsWith("../")) todo.push(new URL(spec, url));
        else problems.push(`${name}: imports "${spec}" (not a relative module), near line ${line(m.index)}`);
      }
    }
  }
  return { files, problems };
}

Deno.test("mod.ts's import graph: no Deno namespace, no npm:/node: imports, no data/", async () => {
  const { files, problems } = await walk(new URL("mod.ts", ROOT));
  if (problems.length) throw new Error(`the engine entry breaks the boundary:\n  ${problems.join("\n  ")}`);
  for (const f of ["core/device.ts", "kernels/conv.ts", "nn/module.ts", "optim/mod.ts", "io/pth.ts"]) {
    if (![...files].some((g) => g === f || g.startsWith(f.replace(/\.ts$/, "/")))) {
      throw new Error(`the walk missed ${f} (reached ${files.size} files)`);
    }
  }
  // Cross-check: Deno's own module graph of mod.ts has exactly these local files and nothing remote.
  const o = await new Deno.Command(Deno.execPath(), {
    args: ["info", "--json", new URL("mod.ts", ROOT).pathname],
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!o.success) throw new Error(`deno info failed: ${new TextDecoder().decode(o.stderr)}`);
  const info = JSON.parse(new TextDecoder().decode(o.stdout));
  // (Its npmPackages field lists the whole project's packages, so only the graph's modules are looked at.)
  type Dep = { specifier: string; code?: { specifier: string }; type?: { specifier: string } };
  const mods: { specifier: string; dependencies?: Dep[] }[] = info.modules;
  const specs = mods.map((m) => m.specifier);
  const nonLocal = [
    ...specs,
    ...mods.flatMap((m) => (m.dependencies ?? []).flatMap((d) => [d.code?.specifier, d.type?.specifier])),
  ].filter((s): s is string => !!s && !s.startsWith("file:"));
  if (nonLocal.length) throw new Error(`deno info lists non-local modules: ${nonLocal.join(", ")}`);
  const denoFiles = specs.map((s) => rel(new URL(s))).sort();
  if (denoFiles.join() !== [...files].sort().join()) {
    throw new Error(`walk and deno info disagree:\n  walk: ${[...files].sort()}\n  deno: ${denoFiles}`);
  }
  // The pipeline's entries do break the rules, and the walk says so.
  const data = await walk(new URL("data/mod.ts", ROOT));
  const filesLayer = await walk(new URL("io/files.ts", ROOT));
  for (
    const [what, found] of [
      ["npm import", data.problems.some((p) => p.includes('imports "dicom-parser"'))],
      ["node: import", data.problems.some((p) => /imports "node:/.test(p))],
      ["data layer", data.problems.some((p) => p.includes("the data layer is reached"))],
      ["Deno namespace", filesLayer.problems.some((p) => p.includes("io/files.ts: uses the Deno namespace"))],
    ] as const
  ) {
    if (!found) throw new Error(`the walk did not flag the ${what} in the pipeline's entries`);
  }
  const stripped = stripComments('const a = "// not a comment"; // Deno.x\n/* Deno.y */ const r = /\\/\\//;');
  if (
    stripped.includes("Deno") || !stripped.includes('"// not a comment"') || !stripped.includes("/\\/\\//")
  ) {
    throw new Error(`stripComments: ${stripped}`);
  }
});

// The pipeline's layers: the commands' shared pieces (cli/) import nothing else of the repo, and the layers
// below train/ (the engine, data/, infer/, the page, parallel/, cli/) never import train/ or bench/.
const BELOW_TRAIN = [
  "core",
  "kernels",
  "nn",
  "optim",
  "models",
  "io",
  "data",
  "infer",
  "web",
  "parallel",
  "cli",
];

Deno.test("pipeline layers: cli/ stands alone, nothing below train/ imports train/ or bench/", async () => {
  const problems: string[] = [];
  const visit = async (dir: URL) => {
    for await (const e of Deno.readDir(dir)) {
      const url = new URL(e.isDirectory ? `${e.name}/` : e.name, dir);
      if (e.isDirectory) await visit(url);
      if (!e.isFile || !e.name.endsWith(".ts")) continue;
      const name = rel(url), code = stripComments(await Deno.readTextFile(url));
      for (const re of SPECIFIER) {
        for (const m of code.matchAll(re)) {
          if (!m[1].startsWith("./") && !m[1].startsWith("../")) continue;
          const to = rel(new URL(m[1], url));
          if (/^(train|bench)\//.test(to)) problems.push(`${name} imports ${to}`);
          if (name.startsWith("cli/") && !to.startsWith("cli/")) problems.push(`${name} imports ${to}`);
        }
      }
    }
  };
  for (const d of BELOW_TRAIN) await visit(new URL(`${d}/`, ROOT));
  if (problems.length) throw new Error(`imports against the layers:\n  ${problems.join("\n  ")}`);
});

Deno.test("a Worker without permissions runs the engine and matches the main thread", async () => {
  const encoder = "r26ir", baseChannels = 4, shape = [1, 1, 8, 32, 32];
  const device = await openDevice();
  let worker: Worker | undefined;
  let timer: ReturnType<typeof setTimeout> | undefined;
  nn.seedInit(11);
  const model = new models.CSNClassifier({ device, encoder, baseChannels, numClasses: 8 });
  try {
    // Non-trivial running statistics, so eval-mode batch norm is not an identity.
    model.train();
    const rng = prng(8);
    const n = shape.reduce((p, d) => p * d, 1);
    const warm = [2, ...shape.slice(1)];
    await tidy(() =>
      noGrad(() => model.forward(tensor(randData(rng, 2 * n, -1, 1), warm, { device })).toArray())
    );
    model.eval();
    const input = randData(rng, n, -1, 1);
    const want = await tidy(() => noGrad(() => model.forward(tensor(input, shape, { device }))).toArray());
    const weights = await io.encodeSafetensors(model.stateDict());

    worker = new Worker(new URL("./fixtures/engine_worker.ts", import.meta.url), {
      type: "module",
      deno: {
        permissions: {
          read: false,
          write: false,
          net: false,
          env: false,
          run: false,
          ffi: false,
          sys: false,
          import: false,
        },
      },
    });
    const w = worker;
    const reply = await new Promise<Record<string, unknown>>((resolve, reject) => {
      timer = setTimeout(() => reject(new Error("the worker did not answer within 300 s")), 300_000);
      w.onmessage = (e) => resolve(e.data);
      w.onerror = (e) => {
        e.preventDefault();
        reject(new Error(`worker failed: ${e.message}`));
      };
      const req: WorkerRequest = { weights, input, shape, encoder, baseChannels };
      w.postMessage(req);
    });
    if (!reply.ok) throw new Error(`worker: ${reply.error}`);
    const perms = reply.permissions as Record<string, string>;
    const granted = Object.entries(perms).filter(([, s]) => s === "granted");
    if (granted.length) throw new Error(`the worker was granted ${granted.map(([k]) => k)}`);
    if (reply.readRefused !== true) throw new Error("the worker could read a file");
    if ((reply.outShape as number[]).join() !== "1,8") throw new Error(`worker output [${reply.outShape}]`);
    assertClose(reply.out as number[], want, "worker vs main thread", 1e-5);
  } finally {
    clearTimeout(timer);
    worker?.terminate();
    model.dispose();
    device.destroy();
  }
});
