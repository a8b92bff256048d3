/**
 * `deno task synth`'s command line: `--help` lists every flag with its default, bad values and unknown flags
 * are usage errors (exit 2, the flag and the problem, no stack trace) as in `deno task train`, and the flags
 * reach data/synth.ts (--mask-fraction 1 writes a mask for every study); `deno task preprocess` likewise.
 */
import { SYNTH_FLAGS } from "../train/synth_cmd.ts";

const cmd = new URL("../train/synth_cmd.ts", import.meta.url).pathname;
const preprocessCmd = new URL("../train/preprocess_cmd.ts", import.meta.url).pathname;

function synth(...args: string[]): Promise<{ code: number; out: string }> {
  return run(cmd, args);
}

async function run(script: string, args: string[]): Promise<{ code: number; out: string }> {
  const o = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", script, ...args],
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).output();
  return { code: o.code, out: new TextDecoder().decode(o.stdout) + new TextDecoder().decode(o.stderr) };
}

function expect(r: { code: number; out: string }, code: number, ...parts: string[]): void {
  if (r.code !== code || parts.some((p) => !r.out.includes(p)) || r.out.includes("    at ")) {
    throw new Error(`expected exit ${code} with ${JSON.stringify(parts)}, got ${r.code}:\n${r.out}`);
  }
}

Deno.test("synth: --help lists every flag with its default; bad values are usage errors", async () => {
  const help = await synth("--help");
  const rows = Object.keys(SYNTH_FLAGS).map((k) => `--${k} `);
  expect(help, 0, ...rows, "(default: out/synth)", "(default: 20)", "(default: 128)", "(default: 0.5)");
  for (const [k, s] of Object.entries(SYNTH_FLAGS)) {
    const line = help.out.split("\n").find((l) => l.trim().startsWith(`--${k} `));
    if (!line?.includes(`(default: ${s.default})`)) throw new Error(`--help: no default for --${k}: ${line}`);
  }
  expect(await synth("--studies", "0"), 2, "synth: --studies must be an integer >= 1, got 0");
  expect(await synth("--studies", "x"), 2, 'synth: --studies: "x" is not a number');
  expect(await synth("--mask-fraction", "1.5"), 2, "--mask-fraction must be a number in 0..1");
  expect(await synth("--studies"), 2, "--studies needs a value");
  expect(await synth("--bogus", "1"), 2, "synth: unknown flag --bogus", "--mask-fraction");
});

Deno.test("synth: the flags reach the generator", async () => {
  const dir = await Deno.makeTempDir({ prefix: "csn-synth-cmd-" });
  try {
    const r = await synth(
      "--out",
      dir,
      "--studies",
      "2",
      "--size",
      "32",
      "--seed",
      "4",
      "--mask-fraction",
      "1",
      "--positive-fraction",
      "1",
      "--box-fraction",
      "0",
    );
    expect(
      r,
      0,
      "study 2/2",
      `wrote 2 studies to ${dir}/train_images`,
      `boxes to ${dir}/train_bounding_boxes.csv`,
    );
    const count = async (d: string) => (await Array.fromAsync(Deno.readDir(`${dir}/${d}`))).length;
    if (await count("train_images") !== 2 || await count("segmentations") !== 2) {
      throw new Error(`expected 2 studies and 2 masks in ${dir}`);
    }
    const boxes = (await Deno.readTextFile(`${dir}/train_bounding_boxes.csv`)).trim().split("\n");
    const labels = (await Deno.readTextFile(`${dir}/train.csv`)).trim().split("\n");
    if (boxes.length !== 1 || labels.slice(1).some((l) => !l.includes(",1,") && !l.endsWith(",1"))) {
      throw new Error(`--positive-fraction 1 --box-fraction 0: labels ${labels}, boxes ${boxes}`);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("preprocess: --help, usage errors, a bad folder named; caches a dataset and resumes", async () => {
  const dir = await Deno.makeTempDir({ prefix: "csn-preprocess-cmd-" });
  const pre = (...args: string[]) => run(preprocessCmd, args);
  try {
    expect(
      await pre("--help"),
      0,
      "--data VALUE",
      "--cache VALUE",
      "(default: <data>/cache)",
      "--workers N",
      "--hu",
    );
    expect(await pre(), 2, "preprocess: --data is required");
    expect(await pre("--data", dir, "--workers", "0"), 2, "--workers must be an integer >= 1, got 0");
    expect(await pre("--data", dir, "--bogus"), 2, "preprocess: unknown flag --bogus");
    expect(await pre("--data", `${dir}/none`), 1, `preprocess: ${dir}/none: no train_images folder`);
    expect(await synth("--out", dir, "--studies", "2", "--size", "32", "--seed", "5"), 0, "wrote 2 studies");
    const args = ["--data", dir, "--cache", `${dir}/c`, "--workers", "1"];
    expect(await pre(...args), 0, `2 studies preprocessed, 0 already cached; cache: ${dir}/c`);
    const cached = (await Array.fromAsync(Deno.readDir(`${dir}/c`))).filter((e) => e.isDirectory);
    for (const e of cached) await Deno.stat(`${dir}/c/${e.name}/header.json`);
    if (cached.length !== 2) throw new Error(`${cached.length} studies in the cache`);
    expect(await pre(...args), 0, "0 studies preprocessed, 2 already cached");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
