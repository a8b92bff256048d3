/**
 * The training command line's errors: bad input is refused before any work, with a message naming the
 * file or flag and the problem (never a stack trace).
 */
import { writeSyntheticDataset } from "../data/synth.ts";
import { preprocessDataset } from "../data/preprocess.ts";
import { writeFoldsCsv } from "../data/rsna.ts";
import { saveCheckpoint } from "../io/files.ts";
import { openDevice, zeros } from "../mod.ts";

const tmp = await Deno.makeTempDir({ prefix: "csn-stages-" });
const cli = new URL("../train/cli.ts", import.meta.url).pathname;

async function train(...args: string[]): Promise<{ code: number; out: string }> {
  const o = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", cli, ...args],
    stdout: "piped",
    stderr: "piped",
    env: { XDG_RUNTIME_DIR: "/tmp", NO_COLOR: "1" },
  }).output();
  return { code: o.code, out: new TextDecoder().decode(o.stdout) + new TextDecoder().decode(o.stderr) };
}

function expect(r: { code: number; out: string }, code: number, ...parts: string[]): void {
  if (r.code !== code || parts.some((p) => !r.out.includes(p)) || r.out.includes("    at ")) {
    throw new Error(`expected exit ${code} with ${JSON.stringify(parts)}, got ${r.code}:\n${r.out}`);
  }
}

Deno.test("usage errors: unknown stage, unknown flag, bad numbers, bad preset; --help lists defaults", async () => {
  expect(await train("nope"), 2, "stages:", "seg", "predict-seg", "cls", "average", "all");
  expect(await train("seg", "--bogus", "1"), 2, "unknown flag --bogus");
  expect(await train("seg", "--epochs", "many"), 2, '--epochs: "many" is not a number');
  expect(await train("seg", "--cache", tmp, "--preset", "huge"), 2, "--preset must be one of");
  expect(
    await train("cls", "--cache", tmp, "--labels", "x.csv", "--crop", "40,256"),
    2,
    "--crop must be D,H,W",
  );
  expect(await train("predict-seg", "--cache", tmp), 2, "--weights is required");
  const help = await train("seg", "--help");
  expect(help, 0, "--max-steps N", "(default: 0)", "--resume", "--preset VALUE");
});

Deno.test("data errors before any work: missing or empty cache, no masks, empty fold, no predictions", async () => {
  expect(await train("seg", "--cache", `${tmp}/missing`), 1, `${tmp}/missing: cannot read the cache`);
  await Deno.mkdir(`${tmp}/empty`);
  expect(await train("seg", "--cache", `${tmp}/empty`), 1, "the cache holds no studies");
  expect(await train("seg", "--data", `${tmp}/empty`), 1, "no train_images/ folder");
  // A small dataset: 4 studies with masks, two per fold.
  await writeSyntheticDataset({ out: `${tmp}/data`, studies: 4, seed: 9, size: 32, maskFraction: 1 });
  await preprocessDataset(`${tmp}/data`, `${tmp}/cache`, { workers: 1 });
  const masked = [...Deno.readDirSync(`${tmp}/data/segmentations`)].length;
  if (masked === 0) throw new Error("fixture needs a study with a mask");
  await writeFoldsCsv(
    `${tmp}/cache/seg_folds.csv`,
    new Map(
      [...Deno.readDirSync(`${tmp}/data/segmentations`)].map((e, i) => [e.name.replace(".nii", ""), i % 2]),
    ),
  );
  expect(
    await train("seg", "--cache", `${tmp}/cache`, "--fold", "3"),
    1,
    "seg_folds.csv: fold 3 has no studies",
  );
  expect(
    await train("cls", "--cache", `${tmp}/cache`, "--labels", `${tmp}/data/train.csv`),
    1,
    "have no predicted mask",
    "predict-seg",
  );
});

Deno.test("checkpoint errors: weights of another model, --init that fits nothing, a run of another configuration", async () => {
  const device = await openDevice();
  await saveCheckpoint(`${tmp}/other.safetensors`, { "foo.weight": zeros([3, 3], { device }) }, {
    config: { model: { model: "CSNUNet", encoder: "r26ir", baseChannels: 4 } },
  });
  device.destroy();
  expect(
    await train("predict-seg", "--cache", `${tmp}/cache`, "--weights", `${tmp}/other.safetensors`),
    1,
    `${tmp}/other.safetensors: does not fit a CSNUNet r26ir`,
  );
  expect(
    await train(
      "seg",
      "--cache",
      `${tmp}/cache`,
      "--fold",
      "0",
      "--out",
      `${tmp}/run`,
      "--init",
      `${tmp}/other.safetensors`,
    ),
    1,
    "no tensor of this checkpoint fits the model",
  );
  await Deno.mkdir(`${tmp}/run`);
  await Deno.writeTextFile(`${tmp}/run/config.json`, JSON.stringify({ stage: "seg", lr: 0.005 }));
  expect(
    await train("seg", "--cache", `${tmp}/cache`, "--fold", "0", "--out", `${tmp}/run`),
    1,
    "already holds a run",
  );
  expect(
    await train(
      "seg",
      "--cache",
      `${tmp}/cache`,
      "--fold",
      "0",
      "--out",
      `${tmp}/run`,
      "--resume",
      "--lr",
      "1",
    ),
    1,
    "was run with another configuration",
    "lr: 0.005 -> 1",
  );
});

Deno.test({ name: "cleanup", fn: () => Deno.remove(tmp, { recursive: true }) });
