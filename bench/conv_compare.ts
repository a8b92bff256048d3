/**
 * The conv cases of bench/conv_cases.json (the CSN's layer shapes scaled for a CPU run, batch 2) on our
 * kernels and on PyTorch CPU (bench/torch_peer.py, 2 threads), side by side: time, GFLOP/s (2 FLOPs per
 * MAC; fwd+bwd counts 3x the forward FLOPs, 2x for the stem, which needs no input gradient), the fraction of
 * the adapter's measured FMA peak (of its measured copy bandwidth for depthwise, which is memory-bound:
 * input + output bytes), and our time / PyTorch's.
 *
 *   deno task bench:conv [--reps N] [--only substring] [--no-torch]
 */
import { F, openDevice, randn, tidy } from "../mod.ts";
import { driverInfo, measureCopyGBs, measurePeakGflops, timePerCall } from "./measure.ts";

interface ConvCase {
  name: string;
  x: number[];
  w: number[];
  stride: [number, number, number];
  padding: [number, number, number];
  groups: number;
  noInputGrad?: boolean;
}

const argv = Deno.args;
const opt = (k: string) => (argv.includes(k) ? argv[argv.indexOf(k) + 1] : undefined);
const reps = Number(opt("--reps") ?? 2);
const only = opt("--only");
const casesPath = new URL("./conv_cases.json", import.meta.url).pathname;
const cases: ConvCase[] = JSON.parse(Deno.readTextFileSync(casesPath)).filter((c: ConvCase) =>
  !only || c.name.includes(only)
);

let torch: Record<string, { fwd_ms: number; fwdbwd_ms: number }> = {};
if (!argv.includes("--no-torch")) {
  console.log("running PyTorch peer (2 threads)...");
  const py = new Deno.Command(Deno.env.get("CSN_PYTHON") ?? "/usr/bin/python3", {
    args: [new URL("./torch_peer.py", import.meta.url).pathname, casesPath, String(reps), only ?? ""],
    stdout: "piped",
    stderr: "inherit",
  });
  const o = await py.output();
  if (o.success) torch = JSON.parse(new TextDecoder().decode(o.stdout));
  else console.log("PyTorch peer failed; showing our numbers only");
}

const device = await openDevice();
const peak = await measurePeakGflops(device);
const copy = await measureCopyGBs(device);
console.log(
  `${driverInfo(device).label}: measured FMA peak ${peak.toFixed(1)} GFLOP/s, copy ${copy.toFixed(1)} GB/s\n`,
);

const head = [
  "case",
  "ours fwd ms",
  "GFLOP/s (%peak)",
  "torch fwd ms",
  "ratio",
  "ours f+b ms",
  "torch f+b ms",
  "ratio",
];
const widths = [38, 11, 22, 12, 6, 11, 12, 6];
const line = (cells: string[]) => console.log(cells.map((c, i) => c.padEnd(widths[i])).join(" | "));
line(head);
for (const c of cases) {
  const x = randn(c.x, { device, seed: 1 });
  const w = randn(c.w, { device, seed: 2, std: 0.1 });
  const opts = { stride: c.stride, padding: c.padding, groups: c.groups };
  const y0 = F.conv3d(x, w, null, opts);
  const macs = y0.numel() * c.w[1] * c.w[2] * c.w[3] * c.w[4];
  const ioBytes = 4 * (x.numel() + y0.numel());
  y0.dispose();
  const fwd = await timePerCall(device, () => F.conv3d(x, w, null, opts).dispose(), reps);
  const xg = randn(c.x, { device, seed: 1 });
  if (!c.noInputGrad) xg.requireGrad();
  w.requireGrad();
  const fb = await timePerCall(device, () =>
    tidy(() => {
      const y = F.sum(F.conv3d(xg, w, null, opts));
      y.backward();
      w.grad?.dispose();
      w.grad = null;
      if (xg.grad) {
        xg.grad.dispose();
        xg.grad = null;
      }
    }), reps);
  const dw = c.groups === c.x[1] && c.groups > 1;
  const rate = dw
    ? `${(ioBytes / fwd / 1e9).toFixed(2)} GB/s (${(100 * ioBytes / fwd / 1e9 / copy).toFixed(0)}%)`
    : `${(2 * macs / fwd / 1e9).toFixed(1)} (${(100 * 2 * macs / fwd / 1e9 / peak).toFixed(0)}%)`;
  const t = torch[c.name];
  line([
    c.name,
    (fwd * 1e3).toFixed(1),
    rate,
    t ? t.fwd_ms.toFixed(1) : "-",
    t ? (fwd * 1e3 / t.fwd_ms).toFixed(2) : "-",
    (fb * 1e3).toFixed(1),
    t ? t.fwdbwd_ms.toFixed(1) : "-",
    t ? (fb * 1e3 / t.fwdbwd_ms).toFixed(2) : "-",
  ]);
  for (const tt of [x, w, xg]) tt.dispose();
}
device.destroy();
