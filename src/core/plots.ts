/** Small dependency-free SVG charts for reports (line charts and scatter plots). */

export interface Series {
  name: string;
  colour: string;
  points: [number, number][];
  dashed?: boolean;
  dots?: boolean;
}

export interface ChartOptions {
  title: string;
  x: string;
  y: string;
  width?: number;
  height?: number;
  xRange?: [number, number];
  yRange?: [number, number];
  hlines?: { y: number; label: string; colour: string; dashed?: boolean }[];
  /** Vertical markers, e.g. the model's chosen threshold. */
  vlines?: { x: number; label: string; colour: string; dashed?: boolean }[];
}

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;');

function niceTicks(lo: number, hi: number, n = 5): number[] {
  const span = hi - lo || 1;
  const step0 = span / n;
  const mag = 10 ** Math.floor(Math.log10(step0));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= step0) ?? step0;
  const out: number[] = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + 1e-9; v += step) out.push(Math.round(v / step) * step);
  return out;
}

export function lineChart(series: Series[], o: ChartOptions): string {
  const W = o.width ?? 560;
  const H = o.height ?? 340;
  const m = { l: 58, r: 130, t: 32, b: 46 };
  const all = series.flatMap((s) => s.points);
  const ys = [...all.map((p) => p[1]), ...(o.hlines ?? []).map((h) => h.y)];
  const [x0, x1] = o.xRange ?? [Math.min(...all.map((p) => p[0])), Math.max(...all.map((p) => p[0]))];
  let [y0, y1] = o.yRange ?? [Math.min(0, ...ys), Math.max(...ys)];
  if (y1 === y0) y1 = y0 + 1;
  if (!o.yRange) {
    // a little air so that lines on the extremes stay visible
    const pad = (y1 - y0) * 0.05;
    y1 += pad;
    if (y0 < 0) y0 -= pad;
  }
  const sx = (x: number) => m.l + ((x - x0) / (x1 - x0 || 1)) * (W - m.l - m.r);
  const sy = (y: number) => H - m.b - ((y - y0) / (y1 - y0)) * (H - m.t - m.b);
  const parts: string[] = [
    `<rect width="${W}" height="${H}" fill="#fff"/>`,
    `<text x="${W / 2 - m.r / 2}" y="20" text-anchor="middle" font-size="14" font-weight="bold">${esc(o.title)}</text>`,
  ];
  for (const t of niceTicks(x0, x1))
    parts.push(
      `<line x1="${sx(t)}" x2="${sx(t)}" y1="${m.t}" y2="${H - m.b}" stroke="#eee"/><text x="${sx(t)}" y="${H - m.b + 16}" text-anchor="middle" font-size="11">${+t.toFixed(3)}</text>`,
    );
  for (const t of niceTicks(y0, y1))
    parts.push(
      `<line x1="${m.l}" x2="${W - m.r}" y1="${sy(t)}" y2="${sy(t)}" stroke="#eee"/><text x="${m.l - 6}" y="${sy(t) + 4}" text-anchor="end" font-size="11">${+t.toFixed(3)}</text>`,
    );
  parts.push(
    `<rect x="${m.l}" y="${m.t}" width="${W - m.l - m.r}" height="${H - m.t - m.b}" fill="none" stroke="#888"/>`,
    `<text x="${(m.l + W - m.r) / 2}" y="${H - 8}" text-anchor="middle" font-size="12">${esc(o.x)}</text>`,
    `<text transform="translate(14,${(m.t + H - m.b) / 2}) rotate(-90)" text-anchor="middle" font-size="12">${esc(o.y)}</text>`,
  );
  for (const h of o.hlines ?? [])
    parts.push(
      `<line x1="${m.l}" x2="${W - m.r}" y1="${sy(h.y)}" y2="${sy(h.y)}" stroke="${h.colour}" stroke-width="1.5" ${h.dashed ? 'stroke-dasharray="6,4"' : ''}/>`,
    );
  for (const v of o.vlines ?? [])
    parts.push(
      `<line x1="${sx(v.x)}" x2="${sx(v.x)}" y1="${m.t}" y2="${H - m.b}" stroke="${v.colour}" stroke-width="1.5" ${v.dashed ? 'stroke-dasharray="3,3"' : ''}/>`,
    );
  const legend = [
    ...series.map((s) => ({ name: s.name, colour: s.colour, dashed: s.dashed })),
    ...(o.hlines ?? []).map((h) => ({ name: h.label, colour: h.colour, dashed: h.dashed })),
    ...(o.vlines ?? []).map((v) => ({ name: v.label, colour: v.colour, dashed: v.dashed })),
  ];
  series.forEach((s) => {
    const pts = s.points.map(([x, y]) => `${sx(x).toFixed(1)},${sy(y).toFixed(1)}`);
    if (!s.dots)
      parts.push(`<polyline points="${pts.join(' ')}" fill="none" stroke="${s.colour}" stroke-width="2" ${s.dashed ? 'stroke-dasharray="6,4"' : ''}/>`);
    if (s.dots || s.points.length < 30)
      for (const [x, y] of s.points) parts.push(`<circle cx="${sx(x).toFixed(1)}" cy="${sy(y).toFixed(1)}" r="${s.dots ? 2.5 : 2}" fill="${s.colour}"/>`);
  });
  for (const [i, l] of legend.entries())
    parts.push(
      `<line x1="${W - m.r + 10}" x2="${W - m.r + 30}" y1="${m.t + 10 + i * 18}" y2="${m.t + 10 + i * 18}" stroke="${l.colour}" stroke-width="2" ${l.dashed ? 'stroke-dasharray="5,3"' : ''}/><text x="${W - m.r + 34}" y="${m.t + 14 + i * 18}" font-size="11">${esc(l.name)}</text>`,
    );
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="DejaVu Sans, sans-serif">${parts.join('')}</svg>`;
}
