/**
 * Checkpoint averaging (train/average.ts, seed 4.8) on a fake run folder: the `best` epochs by lowest
 * validation loss (the last record of an epoch logged twice counts, step records ignored), float tensors
 * averaged (float64 sum, one rounding to f32), integer tensors from the best epoch, metadata of the best
 * checkpoint plus `averaged`, atomic output; errors for missing checkpoints, too few epochs and mismatched
 * tensors.
 */
import { averageCheckpoints, rankEpochs } from "../train/average.ts";
import { encodeSafetensors } from "../io/safetensors.ts";
import { readCheckpointHost } from "../io/files.ts";
import type { HostTensor } from "../io/host.ts";
import { assertRejectsWith, prng } from "./helpers.ts";

function weights(seed: number): Record<string, HostTensor> {
  const r = prng(seed);
  const f = (n: number) =>
    Float32Array.from({ length: n }, () => Math.fround((r() - 0.5) * 10 ** Math.floor(r() * 4)));
  return {
    "conv.weight": { dtype: "f32", shape: [2, 3], data: f(6) },
    "bn.num_batches_tracked": { dtype: "i32", shape: [], data: Int32Array.of(100 * seed) },
    "bn.running_mean": { dtype: "f32", shape: [3], data: f(3) },
    "flags": { dtype: "u8", shape: [2], data: Uint8Array.of(seed, seed + 1) },
  };
}

async function fakeRun(losses: Record<number, number>, opts: { skipFiles?: number[] } = {}): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "average_test_" });
  const lines: string[] = [];
  let step = 0;
  for (const [e, loss] of Object.entries(losses)) {
    const epoch = Number(e);
    lines.push(JSON.stringify({ step: ++step, epoch, loss: 0.7, lr: 1e-4 }));
    lines.push(JSON.stringify({ epoch, step, metrics: { loss, auc: 0.5 } }));
    if (opts.skipFiles?.includes(epoch)) continue;
    const meta = {
      epoch: JSON.stringify(epoch),
      step: JSON.stringify(step),
      config: JSON.stringify({ lr: 3e-4, epoch }),
    };
    await Deno.writeFile(
      `${dir}/epoch-${String(epoch).padStart(3, "0")}.safetensors`,
      await encodeSafetensors(weights(epoch), meta),
    );
  }
  await Deno.writeTextFile(`${dir}/log.jsonl`, lines.join("\n") + "\n");
  return dir;
}

Deno.test("average: the best epochs by loss, float64 mean, integers from the best", async () => {
  // Epoch 2 is logged twice (a resumed run): its last record (0.25) counts, not the first (0.9).
  const dir = await fakeRun({ 1: 0.5, 2: 0.9, 3: 0.3, 4: 0.2, 5: 0.6 });
  try {
    await Deno.writeTextFile(
      `${dir}/log.jsonl`,
      JSON.stringify({ epoch: 2, step: 99, metrics: { loss: 0.25 } }) + "\n",
      { append: true },
    );
    const ranked = await rankEpochs(dir);
    if (ranked.map((e) => e.epoch).join() !== "4,2,3,1,5") {
      throw new Error(`ranking ${JSON.stringify(ranked)}`);
    }
    const r = await averageCheckpoints(dir, 3);
    // Lowest losses: epoch 4 (0.2), 2 (0.25), 3 (0.3).
    if (r.epochs.join() !== "4,2,3" || r.values.join() !== "0.2,0.25,0.3") throw new Error(JSON.stringify(r));
    if (r.path !== `${dir}/swa-best-3.safetensors`) throw new Error(r.path);
    const { tensors, meta } = await readCheckpointHost(r.path);
    const src = [4, 2, 3].map(weights);
    let f32Differs = 0;
    for (const k of ["conv.weight", "bn.running_mean"]) {
      const got = tensors[k];
      if (got.dtype !== "f32" || got.shape.join() !== src[0][k].shape.join()) {
        throw new Error(`${k} dtype/shape`);
      }
      for (let j = 0; j < got.data.length; j++) {
        const [a, b, c] = src.map((s) => s[k].data[j]);
        // Summed in float64 in epoch order, divided, rounded once to f32.
        const want = Math.fround((a + b + c) / 3);
        if (got.data[j] !== want) throw new Error(`${k}[${j}]: ${got.data[j]} != ${want}`);
        const f32 = Math.fround(Math.fround(Math.fround(a + b) + c) / 3);
        if (f32 !== want) f32Differs++;
      }
    }
    // The data is such that a float32 accumulation would give other values: the check above can fail.
    if (!f32Differs) throw new Error("test data does not tell float64 from float32 averaging");
    if (tensors["bn.num_batches_tracked"].data[0] !== 400) {
      throw new Error("integer tensor not from the best epoch");
    }
    if (tensors.flags.dtype !== "u8" || tensors.flags.data.join() !== "4,5") throw new Error("u8 tensor");
    if (
      JSON.stringify(meta.averaged) !== "[4,2,3]" || meta.epoch !== 4 || (meta.config as any)?.epoch !== 4
    ) {
      throw new Error(`metadata ${JSON.stringify(meta)}`);
    }
    const left = [...Deno.readDirSync(dir)].filter((e) => e.name.includes(".tmp"));
    if (left.length) throw new Error("temporary file left");
    // best = 1 is a copy of the best epoch's floats.
    const one = await readCheckpointHost((await averageCheckpoints(dir, 1)).path);
    if (one.tensors["conv.weight"].data.join() !== src[0]["conv.weight"].data.join()) {
      throw new Error("best=1");
    }
    // Another metric, higher is better: ties keep the earlier epoch.
    const byAuc = await rankEpochs(dir, { metric: "auc", mode: "max" });
    if (byAuc.map((e) => e.epoch).join() !== "1,3,4,5") {
      throw new Error(`auc ranking ${JSON.stringify(byAuc)}`);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("average: errors", async () => {
  const dir = await fakeRun({ 1: 0.5, 2: 0.1, 3: 0.3 }, { skipFiles: [2] });
  try {
    await assertRejectsWith(averageCheckpoints(dir, 2), "missing", `${dir}/epoch-002.safetensors`, "2, 3");
    await assertRejectsWith(averageCheckpoints(dir, 4), `${dir}/log.jsonl`, "3 epoch(s)", "best 4");
    await assertRejectsWith(averageCheckpoints(dir, 0), "positive integer");
    await assertRejectsWith(averageCheckpoints(`${dir}/nope`, 1), "nope/log.jsonl", "cannot read");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
  // Checkpoints that do not hold the same tensors.
  const mis = await fakeRun({ 1: 0.1, 2: 0.2 });
  try {
    const w = weights(2);
    w["conv.weight"] = { dtype: "f32", shape: [3, 2], data: new Float32Array(6) };
    await Deno.writeFile(`${mis}/epoch-002.safetensors`, await encodeSafetensors(w, {}));
    await assertRejectsWith(
      averageCheckpoints(mis, 2),
      "epoch-002.safetensors",
      "conv.weight",
      "f32[3,2]",
      "f32[2,3]",
    );
    delete w["conv.weight"];
    await Deno.writeFile(`${mis}/epoch-002.safetensors`, await encodeSafetensors(w, {}));
    await assertRejectsWith(averageCheckpoints(mis, 2), "epoch-002.safetensors", "conv.weight", "missing");
    w["conv.weight"] = weights(2)["conv.weight"];
    w.extra = { dtype: "f32", shape: [1], data: new Float32Array(1) };
    await Deno.writeFile(`${mis}/epoch-002.safetensors`, await encodeSafetensors(w, {}));
    await assertRejectsWith(averageCheckpoints(mis, 2), "epoch-002.safetensors", "extra");
    if (await Deno.stat(`${mis}/swa-best-2.safetensors`).then(() => true, () => false)) {
      throw new Error("an output was written despite the error");
    }
  } finally {
    await Deno.remove(mis, { recursive: true });
  }
});
