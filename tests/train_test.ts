/**
 * The training harness on a toy task (tests/fixtures/toy_task.ts): the seed's T_max and parameter groups,
 * exact resumption, signals, atomic files and the run-folder contract.
 */
import { openDevice } from "../mod.ts";
import { readCheckpointHost } from "../io/files.ts";
import { cosineSchedule } from "../optim/schedule.ts";
import { RunFolder } from "../train/run_folder.ts";
import { seedAdamW, seedTMax, train } from "../train/trainer.ts";
import { Prefetcher, WorkerPool } from "../train/loader.ts";
import type { SampleJob } from "../train/samples.ts";
import type { SegSample } from "../train/seg_data.ts";
import { toyOptions, toyTask } from "./fixtures/toy_task.ts";

const tmp = await Deno.makeTempDir({ prefix: "csn-train-" });
const device = await openDevice();

function assert(cond: unknown, msg: string): asserts cond {
  if (!cond) throw new Error(msg);
}

async function runToy(dir: string, maxSteps: number, resume: boolean, workers = 0, dev = device) {
  const task = toyTask(dev, 5);
  const o = toyOptions({ maxSteps, resume, workers });
  const run = await RunFolder.open(dir, o.config, resume);
  try {
    return await train(task, run, o);
  } finally {
    task.model.dispose();
  }
}

Deno.test("T_max, cosine and the seed's parameter groups", () => {
  assert(seedTMax(40, 76 * 64, 16) === 12160, "seg T_max (seed 2.4)");
  assert(seedTMax(50, 1755 * 8, 64) === 10968, "ir cls T_max (seed 4.6)");
  assert(seedTMax(50, 3510, 64) === 2742, "ip cls T_max (seed 4.6)");
  const s = cosineSchedule({ lrMax: 3e-4, etaMin: 1e-5, totalSteps: 100 });
  assert(Math.abs(s(0) - 3e-4) < 1e-12 && Math.abs(s(100) - 1e-5) < 1e-12, "cosine end points");
  assert(Math.abs(s(50) - (1e-5 + (3e-4 - 1e-5) / 2)) < 1e-12, "cosine midpoint");
  const task = toyTask(device, 1);
  const opt = seedAdamW(task.model, 1e-3, 0.01);
  const names = new Map(task.model.namedParameters().map(([k, t]) => [t, k]));
  const [decay, noDecay] = opt.groups;
  assert(decay.weightDecay === 0.01 && noDecay.weightDecay === 0, "group weight decays");
  assert(
    noDecay.params.length > 0 && noDecay.params.every((p) => names.get(p)!.includes("bias")),
    "bias group",
  );
  assert(decay.params.every((p) => !names.get(p)!.includes("bias")), "decay group has no bias");
  assert(noDecay.params.some((p) => names.get(p)!.endsWith("bn.bias")), "BN betas are not decayed");
  assert(decay.params.some((p) => names.get(p)!.endsWith("bn.weight")), "BN gammas are decayed");
  opt.dispose();
  task.model.dispose();
});

Deno.test("a run of 2k steps equals k steps + --resume to 2k (weights, losses, metrics)", async () => {
  const a = `${tmp}/a`, b = `${tmp}/b`;
  const ra = await runToy(a, 6, false);
  assert(ra.steps === 6 && ra.epochs.length === 1, `uninterrupted run: ${ra.steps} steps`);
  const rb1 = await runToy(b, 3, false);
  assert(rb1.steps === 3 && rb1.stoppedAtMaxSteps, "first half stops at --max-steps");
  const rb2 = await runToy(b, 6, true, 1); // resumed with a loader Worker: the same samples
  assert(rb2.steps === 6, "resumed to 6 steps");
  const A = await readCheckpointHost(`${a}/last.safetensors`),
    B = await readCheckpointHost(`${b}/last.safetensors`);
  const keys = Object.keys(A.tensors);
  assert(keys.length > 10 && keys.join() === Object.keys(B.tensors).join(), "same keys");
  for (const k of keys) {
    const x = A.tensors[k].data, y = B.tensors[k].data;
    for (let i = 0; i < x.length; i++) {
      if (x[i] !== y[i]) throw new Error(`${k}[${i}]: ${x[i]} (uninterrupted) vs ${y[i]} (resumed)`);
    }
  }
  const logA = (await Deno.readTextFile(`${a}/log.jsonl`)).trim().split("\n").map((l) => JSON.parse(l));
  const logB = (await Deno.readTextFile(`${b}/log.jsonl`)).trim().split("\n").map((l) => JSON.parse(l));
  const losses = (l: { loss?: number; step: number }[]) =>
    l.filter((r) => r.loss !== undefined).map((r) => r.loss);
  assert(JSON.stringify(losses(logA)) === JSON.stringify(losses(logB)), "same per-step losses");
  assert(losses(logA).length === 6, "one log record per step");
  const epochA = logA.find((r) => r.metrics), epochB = logB.find((r) => r.metrics);
  assert(epochA && JSON.stringify(epochA) === JSON.stringify(epochB), "same epoch metrics");
  for (
    const f of [
      "config.json",
      "best.safetensors",
      "epoch-001.safetensors",
      "resume.safetensors",
      "curves.svg",
    ]
  ) {
    assert(await Deno.stat(`${a}/${f}`).then(() => true, () => false), `run folder has ${f}`);
  }
  const svg = await Deno.readTextFile(`${a}/curves.svg`);
  assert(svg.startsWith("<svg") && svg.includes("polyline"), "curves.svg is a plot");
  const left = [...Deno.readDirSync(a)].filter((e) => e.name.includes(".tmp-"));
  assert(left.length === 0, `no temporary files left: ${left.map((e) => e.name)}`);
  const meta = A.meta as { step: number; epoch: number; config: unknown };
  assert(
    meta.step === 6 && meta.epoch === 1 && !!meta.config,
    "last.safetensors metadata: step, epoch, config",
  );
});

Deno.test({
  name: "under CSN_BENCHMARK the resume state keeps the tuned kernel variants, and a resumed run takes them",
  ignore: !(await navigator.gpu.requestAdapter())?.features.has("timestamp-query"),
  fn: async () => {
    const dir = `${tmp}/tuned`;
    const first = await openDevice({ profile: "gpu", benchmark: true });
    const again = await openDevice({ profile: "gpu", benchmark: true });
    try {
      await runToy(dir, 2, false, 0, first);
      const saved = (await readCheckpointHost(`${dir}/resume.safetensors`)).meta.tuning as { key: string }[];
      const made = first.tuner!.decisions();
      assert(made.length > 0, "the toy model's convs and GEMMs were tuned");
      assert(JSON.stringify(saved) === JSON.stringify(made), "resume.safetensors holds the decisions");
      await runToy(dir, 4, true, 0, again);
      // Loaded decisions keep the first run's timings; a key timed again would carry new ones.
      const ds = again.tuner!.decisions();
      assert(
        JSON.stringify(ds.slice(0, made.length)) === JSON.stringify(made),
        "the first run's decisions, loaded",
      );
      const keys = ds.map((d) => d.key);
      assert(new Set(keys).size === keys.length, `no loaded key timed again: ${keys}`);
    } finally {
      first.destroy();
      again.destroy();
    }
  },
});

Deno.test("the rate after an epoch's validation measures training steps, not the validation", async () => {
  const dir = `${tmp}/rate`;
  const task = toyTask(device, 5);
  const validate = task.validate.bind(task);
  const pause = 3000;
  task.validate = async (p) => {
    await new Promise((r) => setTimeout(r, pause));
    return validate(p);
  };
  const o = toyOptions({ epochs: 2 });
  const run = await RunFolder.open(dir, o.config, false);
  try {
    await train(task, run, o);
  } finally {
    task.model.dispose();
  }
  // Epoch 2's first window (steps 5-6) starts after epoch 1's validation: 4 samples in well under the pause.
  const rec = run.records().find((r) => r.step === 6 && "samplesPerSec" in r);
  const rate = rec && "samplesPerSec" in rec ? rec.samplesPerSec : undefined;
  assert(typeof rate === "number", "a rate record at step 6");
  const slowest = (o.logEvery * o.batch) / (pause / 1000);
  assert(
    rate > 1.5 * slowest,
    `step 6's rate ${rate.toFixed(2)} samples/s counts the ${pause} ms validation`,
  );
});

Deno.test("a run folder of another configuration is refused; resuming needs the same flags", async () => {
  const dir = `${tmp}/cfg`;
  await RunFolder.open(dir, { a: 1, "max-steps": 2 }, false);
  let msg = "";
  await RunFolder.open(dir, { a: 1 }, false).catch((e) => (msg = e.message));
  assert(msg.includes("already holds a run") && msg.includes("--resume"), `no silent overwrite: ${msg}`);
  msg = "";
  await RunFolder.open(dir, { a: 2, "max-steps": 2 }, true).catch((e) => (msg = e.message));
  assert(msg.includes("another configuration") && msg.includes("a: 1 -> 2"), `config change: ${msg}`);
  await RunFolder.open(dir, { a: 1, "max-steps": 9 }, true); // --max-steps may change
  msg = "";
  await RunFolder.open(`${tmp}/none`, { a: 1 }, true).catch((e) => (msg = e.message));
  assert(msg.includes("nothing to resume"), msg);
});

Deno.test("the prefetching loader: Workers build the same samples, the wait is measured", async () => {
  const jobs = (i: number): SampleJob[] | null =>
    i < 3
      ? [0, 1].map((k) => ({
        kind: "synthetic",
        seed: 10 * i + k,
        shape: [2, 4, 4],
        classes: 3,
        delayMs: 30,
      }))
      : null;
  const main = new WorkerPool(0), workers = new WorkerPool(2);
  try {
    const a = new Prefetcher(main, jobs, 1), b = new Prefetcher(workers, jobs, 2);
    for (let i = 0; i < 3; i++) {
      const [x, y] = [await a.next(), await b.next()] as (SegSample[] | null)[];
      assert(x && y && x.length === 2, "batches");
      for (let k = 0; k < 2; k++) {
        assert(
          x[k].image.join() === y[k].image.join() && x[k].target.join() === y[k].target.join(),
          "same sample",
        );
      }
    }
    assert((await a.next()) === null && (await b.next()) === null, "the jobs end");
    assert(a.waitMs > 0 && b.waitMs >= 0, "wait measured");
  } finally {
    workers.close();
  }
});

async function waitFor(cond: () => Promise<boolean>, ms: number, what: string) {
  const t = performance.now();
  while (!(await cond())) {
    if (performance.now() - t > ms) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function loggedSteps(dir: string): Promise<number> {
  const text = await Deno.readTextFile(`${dir}/log.jsonl`).catch(() => "");
  return text.trim() ? text.trim().split("\n").length : 0;
}

Deno.test("SIGINT finishes the step, saves and exits 130; kill -9 leaves a loadable checkpoint", async () => {
  const dir = `${tmp}/sig`;
  const script = new URL("./fixtures/toy_task.ts", import.meta.url).pathname;
  const start = (resume: boolean) =>
    new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        script,
        dir,
        "0",
        "--epochs",
        "50",
        "--save-every",
        "1000",
        "--delay",
        "150",
        ...(resume ? ["--resume"] : []),
      ],
      stdout: "piped",
      stderr: "piped",
      env: { XDG_RUNTIME_DIR: "/tmp" },
    }).spawn();
  const p = start(false);
  await waitFor(async () => (await loggedSteps(dir)) >= 1, 120_000, "the first logged steps");
  p.kill("SIGINT");
  const o = await p.output();
  const out = new TextDecoder().decode(o.stdout);
  assert(o.code === 130, `exit code ${o.code}: ${out} ${new TextDecoder().decode(o.stderr)}`);
  const stopped = JSON.parse(out.trim().split("\n").pop()!);
  const st = await readCheckpointHost(`${dir}/resume.safetensors`);
  assert(
    (st.meta as { step: number }).step === stopped.steps,
    "the state saved is the step it stopped after",
  );
  assert(stopped.steps >= 1, "at least one step done");

  const q = start(true);
  await waitFor(
    async () => (await loggedSteps(dir)) >= stopped.steps + 4,
    120_000,
    "the resumed run's steps",
  );
  q.kill("SIGKILL");
  await q.output();
  const last = await readCheckpointHost(`${dir}/last.safetensors`);
  const res = await readCheckpointHost(`${dir}/resume.safetensors`);
  assert(Object.keys(last.tensors).length > 10, "last.safetensors loads after kill -9");
  assert((res.meta as { step: number }).step >= stopped.steps, "resume state is at least as new as before");
});

Deno.test({
  name: "cleanup",
  fn: async () => {
    device.destroy();
    await Deno.remove(tmp, { recursive: true });
  },
});
