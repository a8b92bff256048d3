/**
 * @file `deno task serve [--weights RUN_OR_FILES] [--port P]`: bundles web/page.ts for the browser
 * (`deno bundle --platform browser`) and serves the page and the chosen weights on 127.0.0.1. The default
 * weights are those the main job (`deno task main`) trains into out/pipeline; without them the page still
 * opens and says how to get some.
 */
import { expandWeights } from "../infer/ensemble.ts";
import { resolveWeights } from "../infer/load.ts";
import type { WeightsIndex } from "./page.ts";

/** Options of {@link serveWeb}. */
export interface ServeOptions {
  /** Checkpoints or run folders, comma-separated (as `deno task infer --weights`); default out/pipeline. */
  weights?: string;
  /** Port on 127.0.0.1 (default 8080; 0 picks a free one). */
  port?: number;
}

const DEFAULT_WEIGHTS = "out/pipeline";
const HERE = new URL(".", import.meta.url);

/** Bundles web/page.ts and its imports (engine, DICOM reader, pipeline) into one browser module. */
export async function bundlePage(): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "csn-web-" });
  try {
    const out = `${dir}/page.js`;
    const o = await new Deno.Command(Deno.execPath(), {
      args: ["bundle", "--quiet", "--platform", "browser", "-o", out, new URL("page.ts", HERE).pathname],
      stdout: "piped",
      stderr: "piped",
    }).output();
    if (o.code !== 0) {
      throw new Error(`deno bundle web/page.ts failed: ${new TextDecoder().decode(o.stderr).trim()}`);
    }
    return withoutNodeImports(await Deno.readTextFile(out));
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

/**
 * Node leftovers a browser cannot load. The bundle keeps `node:zlib` imports (used by the deflated transfer syntax and .nii.gz files) as imports,
 * which a browser cannot load: each imported function becomes one that throws a clear error when called.
 */
function withoutNodeImports(js: string): string {
  const out = js.replace(
    /^import \{([^}]*)\} from "node:zlib";$/gm,
    (_, names: string) =>
      names.split(",").map((n) => n.trim()).filter(Boolean).map((n) => {
        const [orig, alias] = n.split(/\s+as\s+/);
        return `const ${
          alias ?? orig
        } = () => { throw new Error("${orig}: zlib is not available in the browser ` +
          `(deflated DICOM, 1.2.840.10008.1.2.1.99, cannot be read here)"); };`;
      }).join("\n"),
  );
  const left = out.match(/^import .* from "node:[^"]*";$/m);
  if (left) throw new Error(`web/page.ts bundle: a Node import the browser cannot load: ${left[0]}`);
  // csv-parse (reached through infer/score.ts, never called in the page) builds constants with Buffer.from
  // when it loads; a Uint8Array stands in for Buffer there.
  const shim =
    `if (typeof globalThis.Buffer === "undefined") globalThis.Buffer = { from: (a) => Uint8Array.from(a), ` +
    `isBuffer: () => false };\n`;
  return shim + out;
}

/** The checkpoint files of `--weights` (files, run folders, or a folder of runs such as out/pipeline). */
export async function weightFiles(spec: string): Promise<string[]> {
  const out: string[] = [];
  for (const s of spec.split(",").map((x) => x.trim()).filter(Boolean)) {
    for (const p of await expandWeights(s)) out.push(await resolveWeights(p));
  }
  return out;
}

/** Serves the page; resolves when listening, with its URL and a way to stop. */
export async function serveWeb(o: ServeOptions = {}): Promise<{ url: string; close: () => Promise<void> }> {
  let files: string[] = [];
  let hint: string | undefined;
  if (o.weights !== undefined) files = await weightFiles(o.weights);
  else if (await Deno.stat(DEFAULT_WEIGHTS).then((s) => s.isDirectory, () => false)) {
    files = await weightFiles(DEFAULT_WEIGHTS);
  } else {
    hint =
      `No weights: ${DEFAULT_WEIGHTS} does not exist. Train the tiny demo models with \`deno task main\` ` +
      `(they land in ${DEFAULT_WEIGHTS}), or restart with \`deno task serve --weights SEG_RUN,CLS_RUN\`.`;
  }
  const js = await bundlePage();
  const statics: Record<string, [string, string]> = {
    "/": ["index.html", "text/html; charset=utf-8"],
    "/index.html": ["index.html", "text/html; charset=utf-8"],
    "/page.css": ["page.css", "text/css; charset=utf-8"],
  };
  const index: WeightsIndex = {
    files: files.map((f, i) => ({ name: f.split("/").slice(-2).join("/"), url: `weights/${i}.safetensors` })),
    hint,
  };
  const server = Deno.serve({ hostname: "127.0.0.1", port: o.port ?? 8080, onListen() {} }, async (req) => {
    const path = new URL(req.url).pathname;
    if (path === "/page.js") return new Response(js, { headers: { "content-type": "text/javascript" } });
    if (path === "/weights.json") return Response.json(index);
    const w = path.match(/^\/weights\/(\d+)\.safetensors$/);
    if (w && files[Number(w[1])]) {
      const f = await Deno.open(files[Number(w[1])]);
      return new Response(f.readable, { headers: { "content-type": "application/octet-stream" } });
    }
    const s = statics[path];
    if (s) {
      return new Response(await Deno.readFile(new URL(s[0], HERE)), { headers: { "content-type": s[1] } });
    }
    return new Response("not found", { status: 404 });
  });
  const url = `http://127.0.0.1:${server.addr.port}/`;
  return { url, close: () => server.shutdown() };
}

function usage(msg: string): never {
  console.error(`serve: ${msg}\nusage: deno task serve [--weights RUN_OR_FILES] [--port P]`);
  Deno.exit(2);
}

if (import.meta.main) {
  const o: ServeOptions = {};
  const a = [...Deno.args];
  while (a.length) {
    const k = a.shift()!;
    const [name, inline] = k.includes("=")
      ? [k.slice(0, k.indexOf("=")), k.slice(k.indexOf("=") + 1)]
      : [k, undefined];
    const v = inline ?? a.shift();
    if (name === "--help" || name === "-h") usage("serves the browser page");
    if (v === undefined) usage(`${name} needs a value`);
    if (name === "--weights") o.weights = v;
    else if (name === "--port") {
      const p = Number(v);
      if (!Number.isInteger(p) || p < 0 || p > 65535) usage(`--port must be an integer 0..65535, got "${v}"`);
      o.port = p;
    } else usage(`unknown argument "${k}"`);
  }
  try {
    const s = await serveWeb(o);
    console.log(`serve: open ${s.url} in a browser with WebGPU (Chrome/Chromium, Edge); Ctrl-C stops`);
  } catch (e) {
    console.error(`serve: ${(e as Error).message}`);
    Deno.exit(1);
  }
}
