/**
 * @file `deno task serve [--weights RUN_OR_FILES] [--port P]`: bundles web/page.ts for the browser
 * (`deno bundle --platform browser`) and serves the page and the chosen weights on 127.0.0.1. The default
 * weights are those the main job (`deno task main`) trains into out/pipeline; without them the page still
 * opens and says how to get some.
 */
import { type FlagSpec, parseFlags, usage, UsageError } from "../cli/flags.ts";
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

/**
 * The codecs' wasm (JPEG-LS: CharLS, JPEG 2000: OpenJPEG) by the path the bundle fetches it from: emscripten
 * looks for it beside the page when the module has no script URL, as in the bundle. The files are those of
 * the npm packages that data/codecs.ts loads in Deno.
 */
const CODEC_WASM: Record<string, URL> = {
  "/charlswasm_decode.wasm": new URL(
    "charlswasm_decode.wasm",
    import.meta.resolve("@cornerstonejs/codec-charls/decodewasmjs"),
  ),
  "/openjpegwasm_decode.wasm": new URL(
    "openjpegwasm_decode.wasm",
    import.meta.resolve("@cornerstonejs/codec-openjpeg/decodewasmjs"),
  ),
};

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
 * Node leftovers a browser cannot load. The bundle keeps `node:zlib` imports (reading .nii.gz files; deflated
 * DICOM uses the engine's inflater in the page) as imports, which a browser cannot load: each imported
 * function becomes one that throws a clear error when called.
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
          `(.nii.gz files cannot be read here)"); };`;
      }).join("\n"),
  );
  const left = out.match(/^import .* from "node:[^"]*";$/m);
  if (left) throw new Error(`web/page.ts bundle: a Node import the browser cannot load: ${left[0]}`);
  // csv-parse (reached through infer/score.ts, never called in the page) builds constants with Buffer.from
  // when it loads; a Uint8Array stands in for Buffer there. The stand-in is a function, because dicom-parser
  // tests `x instanceof Buffer` when Buffer is defined (copying encapsulated pixel data): nothing is one.
  const shim =
    `if (typeof globalThis.Buffer === "undefined") globalThis.Buffer = Object.assign(function Buffer() {}, ` +
    `{ from: (a) => Uint8Array.from(a), isBuffer: () => false });\n`;
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
    if (path === "/favicon.ico") return new Response(null, { status: 204 });
    if (CODEC_WASM[path]) {
      const f = await Deno.open(CODEC_WASM[path]);
      return new Response(f.readable, { headers: { "content-type": "application/wasm" } });
    }
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

const FLAGS: Record<string, FlagSpec> = {
  weights: {
    type: "string",
    help:
      `checkpoints or run folders, comma-separated, as \`deno task infer --weights\` (default: ${DEFAULT_WEIGHTS})`,
  },
  port: { type: "number", default: 8080, help: "port on 127.0.0.1 (0 picks a free one)" },
};

/** Runs the command line; returns the exit code (2 for usage errors, as train/cli.ts) or null while serving. */
export async function main(args: string[]): Promise<number | null> {
  let o: ServeOptions;
  try {
    const f = parseFlags(args, FLAGS);
    if (f.help) {
      console.log(usage("deno task serve: the browser page (WebGPU) on 127.0.0.1", FLAGS));
      return 0;
    }
    const port = f.port as number;
    if (!Number.isInteger(port) || port < 0 || port > 65535) {
      throw new UsageError(`--port must be an integer 0..65535, got ${port}`);
    }
    o = { weights: f.weights as string | undefined, port };
  } catch (e) {
    console.error(`serve: ${(e as Error).message}`);
    return 2;
  }
  try {
    const s = await serveWeb(o);
    console.log(`serve: open ${s.url} in a browser with WebGPU (Chrome/Chromium, Edge); Ctrl-C stops`);
    return null;
  } catch (e) {
    console.error(`serve: ${(e as Error).message}`);
    return 1;
  }
}

if (import.meta.main) {
  const code = await main(Deno.args);
  if (code !== null) Deno.exitCode = code;
}
