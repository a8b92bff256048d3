/**
 * Compile cost of one training step (forward, loss, backward, gradient clipping, AdamW) of a full-depth model:
 * pipelines created, and the first step's seconds minus a warm step's (the time spent compiling WGSL through
 * LLVM on lavapipe). A small input keeps the compute short while every layer still has its own shape, so the
 * pipeline count matches the full-size step's. Run it with a fresh `MESA_SHADER_CACHE_DIR` for the cold cost,
 * and again with the same directory for the warm (disk-cached) one.
 *
 *   deno run -A bench/compile.ts [--model cls|unet] [--encoder r152ir] [--shape 1,3,16,64,64] [--by-op]
 *     [--arrays class|runtime]
 */
import { models, openDevice, optim, randn, tensor, tidy } from "../mod.ts";
import { clipGradNorm } from "../optim/clip.ts";
import { arrayDecl } from "../kernels/codegen.ts";

const argv = Deno.args;
const opt = (k: string, d: string) => (argv.includes(k) ? argv[argv.indexOf(k) + 1] : d);
const unet = opt("--model", "cls") === "unet";
const encoder = opt("--encoder", unet ? "r50ir" : "r152ir");
const shape = opt("--shape", unet ? "1,1,16,64,64" : "1,3,16,64,64").split(",").map(Number);

// `--arrays runtime` declares runtime-sized storage arrays instead of size-class ones (the A/B in docs/perf.md).
if (argv.includes("--arrays")) arrayDecl.mode = opt("--arrays", "class") as "class" | "runtime";
const device = await openDevice();
// Distinct sources per op name, by wrapping the instance's dispatch (the device caches by source).
const byOp = new Map<string, Set<string>>();
const dispatch = device.dispatch.bind(device);
device.dispatch = (name, source, ...rest) => {
  let s = byOp.get(name);
  if (!s) byOp.set(name, s = new Set());
  s.add(source);
  return dispatch(name, source, ...rest);
};
const model = unet ? new models.CSNUNet({ device, encoder }) : new models.CSNClassifier({ device, encoder });
model.train();
const opt_ = new optim.AdamW(model.parameters(), { lr: 1e-4 });
const [N, , D, H, W] = shape;
const target = unet
  ? tensor(
    Int32Array.from({ length: N * D * H * W }, (_, i) => (i * 7) % 8),
    [N, D, H, W],
    { device, dtype: "i32" },
  )
  : tensor(Float32Array.from({ length: N * 8 }, (_, i) => i % 3 === 0 ? 1 : 0), [N, 8], { device });

/** CPU seconds of this process (lavapipe's threads included): less disturbed by other load than wall time. */
function cpuSec(): number {
  try {
    const f = Deno.readTextFileSync("/proc/self/stat").split(") ")[1].split(" ");
    return (Number(f[11]) + Number(f[12])) / 100;
  } catch {
    return NaN;
  }
}

async function step(): Promise<{ sec: number; cpu: number; pipelines: number; loss: number }> {
  const p0 = device.stats().pipelines;
  const t0 = performance.now(), c0 = cpuSec();
  const loss = await tidy(async () => {
    opt_.zeroGrad();
    const x = randn(shape, { device, seed: 1 });
    const y = model.forward(x);
    const l = unet ? models.segLoss(y, target) : models.rsnaLoss(y, target);
    l.backward();
    clipGradNorm(model.parameters(), 5).dispose();
    opt_.step();
    return await l.item();
  });
  await device.sync();
  return {
    sec: (performance.now() - t0) / 1000,
    cpu: cpuSec() - c0,
    pipelines: device.stats().pipelines - p0,
    loss,
  };
}

const first = await step();
const warm = await step();
const warm2 = await step();
const w = Math.min(warm.sec, warm2.sec), wc = Math.min(warm.cpu, warm2.cpu);
console.log(
  JSON.stringify({
    model: unet ? `CSNUNet ${encoder}` : `CSNClassifier ${encoder}`,
    arrays: arrayDecl.mode,
    shape,
    driver: device.info.description,
    cache: Deno.env.get("MESA_SHADER_CACHE_DIR") ?? "(default)",
    pipelines: first.pipelines,
    newInWarmStep: warm.pipelines + warm2.pipelines,
    firstStepS: +first.sec.toFixed(2),
    warmStepS: +w.toFixed(2),
    compileS: +(first.sec - w).toFixed(2),
    firstStepCpuS: +first.cpu.toFixed(2),
    warmStepCpuS: +wc.toFixed(2),
    compileCpuS: +(first.cpu - wc).toFixed(2),
    loss: +first.loss.toFixed(5),
  }),
);
if (argv.includes("--by-op")) {
  const rows = [...byOp].map(([k, s]) => [k, s.size] as const).sort((a, b) => b[1] - a[1]);
  console.log(rows.map(([k, n]) => `${n}\t${k}`).join("\n"));
}
opt_.dispose();
model.dispose();
device.destroy();
