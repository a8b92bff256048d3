/**
 * AdamW and the cosine schedule against PyTorch: 20 steps of a small conv net (conv, batch norm, ReLU,
 * 1x1x1 conv) from identical weights and data, with a no-decay group for biases, must end with the same
 * parameters (rtol 1e-4) and follow the same learning rates as CosineAnnealingLR.
 */
import { F, nn, openDevice, optim, type Tensor, tensor, tidy } from "../mod.ts";
import type { Device } from "../core/device.ts";
import { assertClose, prng, randData } from "./helpers.ts";

class Net extends nn.Module {
  conv1: nn.Conv3d;
  bn: nn.BatchNorm3d;
  conv2: nn.Conv3d;
  constructor(device: Device) {
    super();
    this.conv1 = this.registerModule("conv1", new nn.Conv3d(2, 4, 3, { device, padding: 1, bias: false }));
    this.bn = this.registerModule("bn", new nn.BatchNorm3d(4, { device, eps: 1e-3 }));
    this.conv2 = this.registerModule("conv2", new nn.Conv3d(4, 3, 1, { device }));
  }
  forward(x: Tensor): Tensor {
    return F.mean(this.conv2.forward(F.relu(this.bn.forward(this.conv1.forward(x)))), [2, 3, 4]);
  }
}

Deno.test("20 AdamW steps with a cosine schedule match torch.optim.AdamW + CosineAnnealingLR", async () => {
  const device = await openDevice();
  try {
    const net = new Net(device);
    const rng = prng(11);
    // Fresh random weights (not our init) so the test does not depend on initialisers.
    const state: Record<string, { data: number[]; shape: number[] }> = {};
    for (const [k, t] of Object.entries(net.stateDict())) {
      if (t.dtype !== "f32") continue;
      const n = t.numel();
      const data = k.includes("running_var")
        ? Array(n).fill(1)
        : k.includes("running_mean")
        ? Array(n).fill(0)
        : randData(rng, n, -0.4, 0.4);
      state[k] = { data, shape: [...t.shape] };
    }
    const xd = { data: randData(rng, 3 * 2 * 4 * 5 * 6), shape: [3, 2, 4, 5, 6] };
    const yd = { data: randData(rng, 3 * 3), shape: [3, 3] };
    const cfg = { state, x: xd, y: yd, steps: 20, lr: 1e-2, wd: 0.05, eta_min: 1e-4, t_max: 15 };
    const py = new Deno.Command(Deno.env.get("CSN_PYTHON") ?? "/usr/bin/python3", {
      args: [new URL("./adamw_ref.py", import.meta.url).pathname],
      stdin: "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const w = py.stdin.getWriter();
    await w.write(new TextEncoder().encode(JSON.stringify(cfg)));
    await w.close();
    const o = await py.output();
    if (!o.success) throw new Error(new TextDecoder().decode(o.stderr));
    const ref = JSON.parse(new TextDecoder().decode(o.stdout));

    const sd: Record<string, Tensor> = {};
    for (const [k, v] of Object.entries(state)) sd[k] = tensor(v.data, v.shape, { device });
    sd["bn.num_batches_tracked"] = net.bn.numBatchesTracked;
    net.loadStateDict(sd);
    for (const t of Object.values(sd)) if (t !== net.bn.numBatchesTracked) t.dispose();
    const named = net.namedParameters();
    const opt = new optim.AdamW([
      { params: named.filter(([k]) => !k.includes("bias")).map(([, p]) => p) },
      { params: named.filter(([k]) => k.includes("bias")).map(([, p]) => p), weightDecay: 0 },
    ], { lr: cfg.lr, weightDecay: cfg.wd });
    const sched = optim.cosineSchedule({ lrMax: cfg.lr, etaMin: cfg.eta_min, totalSteps: cfg.t_max });
    const x = tensor(xd.data, xd.shape, { device }), y = tensor(yd.data, yd.shape, { device });
    const lrs: number[] = [];
    const losses: Tensor[] = [];
    for (let step = 0; step < cfg.steps; step++) {
      opt.lr = sched(step);
      lrs.push(opt.lr);
      opt.zeroGrad();
      losses.push(tidy(() => {
        const d = F.sub(net.forward(x), y);
        const loss = F.mean(F.mul(d, d));
        loss.backward();
        opt.step();
        return loss;
      }));
    }
    assertClose(lrs, ref.lrs, "learning rates", 1e-6);
    const lossVals = [];
    for (const l of losses) lossVals.push(await l.item());
    assertClose(lossVals, ref.losses, "losses", 1e-4);
    for (const [k, t] of Object.entries(net.stateDict())) {
      assertClose(await t.toArray(), ref.params[k], `parameter ${k} after 20 steps`, 1e-4);
    }
    opt.dispose();
    net.dispose();
  } finally {
    device.destroy();
  }
});

Deno.test("clipGradNorm scales gradients like torch.nn.utils.clip_grad_norm_", async () => {
  const device = await openDevice();
  try {
    await tidy(async () => {
      const a = tensor([3, 4], [2], { device, requiresGrad: true });
      const b = tensor([12], [1], { device, requiresGrad: true });
      F.add(F.sum(F.mul(a, a)), F.sum(F.mul(b, b))).backward(); // grads 6, 8, 24: norm 26
      const norm = optim.clipGradNorm([a, b], 13);
      assertClose([await norm.item()], [26], "norm");
      const c = 13 / (26 + 1e-6);
      assertClose(
        [...await a.grad!.toArray(), ...await b.grad!.toArray()],
        [6 * c, 8 * c, 24 * c],
        "clipped",
      );
      norm.dispose();
    });
  } finally {
    device.destroy();
  }
});

Deno.test("clipGradNorm: 40 odd-sized gradients in a few dispatches, with windows, against float64", async () => {
  // Sizes of 1..5 elements and lone large ones (bound in 1 KiB windows on the second device), so that chunks
  // of 16, vec4 and scalar scaling and windowed reads all run; clipped (coefficient 1/3) and not (clamped 1).
  const sizes = Array.from({ length: 40 }, (_, i) => (i % 13 === 5 ? 700 + i : 1 + (i * 7) % 5));
  const rnd = prng(7);
  const data = sizes.map((n) => Array.from({ length: n }, () => 2 * rnd() - 1));
  const ref = Math.sqrt(data.flat().reduce((a, v) => a + v * v, 0));
  for (const kib of [0, 1]) {
    const device = await openDevice(kib ? { maxBindingBytes: kib * 1024 } : {});
    try {
      for (const maxNorm of [ref / 3, 2 * ref]) {
        await tidy(async () => {
          const ps = data.map((d) => {
            const p = tensor(new Array(d.length).fill(0), [d.length], { device }).requireGrad();
            p.grad = tensor(d, [d.length], { device });
            return p;
          });
          const grads = ps.map((p) => p.grad!);
          const d0 = device.stats().dispatches;
          const norm = optim.clipGradNorm(ps, maxNorm);
          const dispatches = device.stats().dispatches - d0;
          const what = `${kib ? "1 KiB windows" : "default"}, maxNorm ${maxNorm.toFixed(3)}`;
          assertClose([await norm.item()], [ref], `norm, ${what}`, 1e-5);
          const c = Math.min(maxNorm / (ref + 1e-6), 1);
          const got = (await Promise.all(ps.map((p) => p.grad!.toArray()))).flatMap((x) => [...x]);
          assertClose(got, data.flat().map((v) => v * c), `clipped, ${what}`, 1e-5);
          if (ps.some((p, i) => p.grad !== grads[i])) throw new Error("clipGradNorm replaced a gradient");
          // Chunks of 16 (the 3 large gradients alone when windowed), each read and scaled once, plus the norm.
          const chunks = kib ? 3 + Math.ceil(37 / 16) : Math.ceil(40 / 16);
          if (dispatches !== 2 * chunks + 1) {
            throw new Error(
              `clipGradNorm took ${dispatches} dispatches, expected ${2 * chunks + 1} (${what})`,
            );
          }
        });
      }
    } finally {
      device.destroy();
    }
  }
});

Deno.test("AdamW state dict resumes training exactly", async () => {
  const device = await openDevice();
  try {
    await tidy(async () => {
      const mk = () => tensor([0.5, -1, 2, 0.25], [4], { device }).requireGrad();
      const grads = [[1, 2, -1, 0.5], [0.3, -0.2, 0.1, 2], [-1, 1, 1, -1]];
      const run = (p: Tensor, opt: InstanceType<typeof optim.AdamW>, g: number[]) => {
        p.grad = tensor(g, [4], { device });
        opt.step();
        opt.zeroGrad();
      };
      const a = mk(), optA = new optim.AdamW([a], { lr: 0.1 });
      for (const g of grads) run(a, optA, g);
      const b = mk(), optB = new optim.AdamW([b], { lr: 0.1 });
      run(b, optB, grads[0]);
      const c = tensor(await b.toArray(), [4], { device }).requireGrad();
      const optC = new optim.AdamW([c], { lr: 0.1 });
      optC.loadStateDict(optB.stateDict());
      run(c, optC, grads[1]);
      run(c, optC, grads[2]);
      if (optC.stepCount !== 3) throw new Error(`step count ${optC.stepCount}`);
      assertClose(await c.toArray(), await a.toArray(), "resumed parameters", 0, 0);
      for (const o of [optA, optB, optC]) o.dispose();
    });
  } finally {
    device.destroy();
  }
});
