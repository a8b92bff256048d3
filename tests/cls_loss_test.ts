/**
 * The classifier stage's loss with the plain CNN's fracture head (train/cls.ts): the mean BCE of the logits
 * plus weight x the fracture map's BCE (pos_weight) against each known sample's boxes max-pooled onto the
 * map's cells, averaged over the known samples' cells, recomputed here in float64 from the model's own
 * outputs; a sample whose fractures are unknown adds nothing, a batch with none known is the plain BCE.
 */
import { models, noGrad, openDevice, tensor, tidy } from "../mod.ts";
import { clsTask } from "../train/cls.ts";
import { CLS_TINY_PLAIN, type ClsConfig } from "../train/presets.ts";
import type { ClsSample } from "../infer/crops.ts";
import { prng, randData } from "./helpers.ts";

const D = 4, S = 16;

function bce(x: number, t: number, pw = 1): number {
  return (1 - t) * x + (1 + (pw - 1) * t) * (Math.log1p(Math.exp(-Math.abs(x))) + Math.max(-x, 0));
}

Deno.test("cls loss: BCE + weight x the fracture map's BCE over the known samples' cells", async () => {
  const device = await openDevice();
  try {
    const model = new models.PlainClassifier({
      device,
      widths: [3, 4, 5, 6],
      dropout: 0,
      fractureHead: true,
    });
    model.eval(); // batch statistics would make the host recomputation depend on the batch
    const rng = prng(4);
    const sample = (fractures: Uint8Array | null, label: number): ClsSample => ({
      input: Float32Array.from(randData(rng, 3 * D * S * S)),
      labels: Float32Array.from({ length: 8 }, (_, i) => (i === 0 || i === 3 ? label : 0)),
      shape: [3, D, S, S],
      vertebra: 3,
      fractures,
    });
    const box = new Uint8Array(D * S * S);
    for (let z = 1; z < 3; z++) {
      for (let y = 5; y < 9; y++) box.fill(1, (z * S + y) * S + 2, (z * S + y) * S + 7);
    }
    const batch = [sample(box, 1), sample(null, 1), sample(new Uint8Array(D * S * S), 0)];
    const c: ClsConfig = { ...CLS_TINY_PLAIN, crop: [D, S], fractureWeight: 0.7, fracturePosWeight: 5 };
    const task = clsTask({ device, model, cache: "", train: [], val: [], config: c });
    const got = await tidy(() => task.loss(batch).item());
    const onlyUnknown = await tidy(() => task.loss([batch[1]]).item());

    const x = tensor(Float32Array.from(batch.flatMap((s) => [...s.input])), [3, 3, D, S, S], { device });
    const { logits, map } = noGrad(() => model.forwardWithMap(x));
    const lg = await logits.toArray(), mp = await map.toArray();
    const [, , d, h, w] = map.shape;
    for (const t of [x, logits, map]) t.dispose();
    let cls = 0;
    batch.forEach((s, i) => s.labels.forEach((t, j) => (cls += bce(lg[i * 8 + j], t) / 24)));
    // the map's cells: D 4 -> 4 -> 2 -> 1, S 16 -> 8 -> 4 -> 2; a cell holds a fracture if any of its voxels does
    let frac = 0;
    const cells = d * h * w;
    for (const i of [0, 2]) {
      for (let c3 = 0; c3 < cells; c3++) {
        const cz = Math.floor(c3 / (h * w)), cy = Math.floor(c3 / w) % h, cx = c3 % w;
        let t = 0;
        for (let z = (cz * D) / d; z < ((cz + 1) * D) / d; z++) {
          for (let y = (cy * S) / h; y < ((cy + 1) * S) / h; y++) {
            for (let xx = (cx * S) / w; xx < ((cx + 1) * S) / w; xx++) {
              t = Math.max(t, batch[i].fractures![(z * S + y) * S + xx]);
            }
          }
        }
        frac += bce(mp[i * cells + c3], t, 5);
      }
    }
    const want = cls + 0.7 * frac / (2 * cells);
    if (Math.abs(got - want) > 1e-5 * Math.abs(want)) throw new Error(`loss ${got} != ${want} (BCE ${cls})`);
    let only = 0;
    batch[1].labels.forEach((t, j) => (only += bce(lg[8 + j], t) / 8));
    if (Math.abs(onlyUnknown - only) > 1e-5 * only) {
      throw new Error(`unknown only: ${onlyUnknown} != BCE ${only}`);
    }
    model.dispose();
  } finally {
    device.destroy();
  }
});
