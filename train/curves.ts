/**
 * @file curves.svg: training loss, learning rate and the validation metric against step, as a small
 * self-contained SVG a person opens in a browser (regenerated every epoch).
 */

/** Data of the plot. */
export interface CurveData {
  title: string;
  loss: [number, number][];
  lr: [number, number][];
  metric: { name: string; points: [number, number][] };
}

function esc(s: string): string {
  return s.replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]!);
}

function fmt(v: number): string {
  if (v === 0) return "0";
  const a = Math.abs(v);
  return a >= 1e4 || a < 1e-3 ? v.toExponential(1) : Number(v.toPrecision(3)).toString();
}

function panel(
  x0: number,
  y0: number,
  w: number,
  h: number,
  label: string,
  series: { pts: [number, number][]; color: string; dots?: boolean }[],
  xMax: number,
): string {
  const all = series.flatMap((s) => s.pts).filter(([, y]) => Number.isFinite(y));
  let lo = Math.min(...all.map(([, y]) => y)), hi = Math.max(...all.map(([, y]) => y));
  if (!all.length) (lo = 0), (hi = 1);
  if (hi - lo < 1e-12) (lo -= 0.5 * Math.abs(lo) + 1e-6), (hi += 0.5 * Math.abs(hi) + 1e-6);
  const X = (s: number) => x0 + (w * s) / Math.max(1, xMax);
  const Y = (v: number) => y0 + h - (h * (v - lo)) / (hi - lo);
  const parts = [
    `<rect x="${x0}" y="${y0}" width="${w}" height="${h}" fill="none" stroke="#999"/>`,
    `<text x="${x0}" y="${y0 - 6}" font-size="13">${esc(label)}</text>`,
    `<text x="${x0 - 4}" y="${y0 + 10}" font-size="10" text-anchor="end">${fmt(hi)}</text>`,
    `<text x="${x0 - 4}" y="${y0 + h}" font-size="10" text-anchor="end">${fmt(lo)}</text>`,
  ];
  for (const s of series) {
    const pts = s.pts.filter(([, y]) => Number.isFinite(y));
    if (!pts.length) continue;
    parts.push(
      `<polyline fill="none" stroke="${s.color}" stroke-width="1.5" points="${
        pts.map(([a, b]) => `${X(a).toFixed(1)},${Y(b).toFixed(1)}`).join(" ")
      }"/>`,
    );
    if (s.dots) {
      for (const [a, b] of pts) {
        parts.push(`<circle cx="${X(a).toFixed(1)}" cy="${Y(b).toFixed(1)}" r="3" fill="${s.color}"/>`);
      }
    }
  }
  return parts.join("\n");
}

/** Moving average over a window of `k` points (the raw per-step loss is noisy). */
function smooth(pts: [number, number][], k: number): [number, number][] {
  if (pts.length < 3) return pts;
  return pts.map(([x], i) => {
    const a = Math.max(0, i - k + 1);
    const win = pts.slice(a, i + 1);
    return [x, win.reduce((s, [, y]) => s + y, 0) / win.length];
  });
}

/** The SVG text. */
export function curvesSvg(d: CurveData): string {
  const W = 760, ph = 170, left = 70, pw = W - left - 20;
  const xMax = Math.max(1, ...d.loss.map(([s]) => s), ...d.metric.points.map(([s]) => s));
  const k = Math.max(1, Math.round(d.loss.length / 50));
  const body = [
    `<text x="${left}" y="22" font-size="15" font-weight="bold">${esc(d.title)}</text>`,
    panel(left, 50, pw, ph, `training loss (light: per logged step, dark: moving mean of ${k})`, [
      { pts: d.loss, color: "#9ecae1" },
      { pts: smooth(d.loss, k), color: "#08519c" },
    ], xMax),
    panel(left, 50 + ph + 40, pw, ph, "learning rate", [{ pts: d.lr, color: "#31a354" }], xMax),
    panel(left, 50 + 2 * (ph + 40), pw, ph, `validation ${d.metric.name} (per epoch)`, [
      { pts: d.metric.points, color: "#de2d26", dots: true },
    ], xMax),
    `<text x="${left + pw}" y="${
      50 + 3 * ph + 2 * 40 + 18
    }" font-size="11" text-anchor="end">step (0 .. ${xMax})</text>`,
  ];
  const H = 50 + 3 * ph + 2 * 40 + 30;
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif">
<rect width="100%" height="100%" fill="white"/>
${body.join("\n")}
</svg>
`;
}
