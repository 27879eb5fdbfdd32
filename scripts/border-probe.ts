/**
 * Probe for models/LIMITS.md: would red cells cut by the image border be counted better with
 * their own, lower threshold? Boxes touching the border (within 3 px) are kept from `border`
 * up, the rest from the model's threshold; F1 by the one matching in core/metrics.ts. Then,
 * for the border cells the model's threshold misses: is there a well-placed box below it?
 * With --boost-from SUBSET: border red cells' scores raised by 0-0.15, the red-cell threshold
 * re-chosen for F1 on SUBSET's images, and this subset scored at it (the two calibrated together).
 * Usage: node dist/scripts/border-probe.js [--model M] [--data training/splits/val.json] [--subset full-field]
 */
import { parseArgs } from 'node:util';
import { loadTruth } from '../src/adapters/files.js';
import { classAt, type EvalImage, iou } from '../src/core/metrics.js';
import type { Box } from '../src/core/types.js';
import { collect } from '../src/evaluation.js';
import { loadModel } from '../src/index.js';

const { values: a } = parseArgs({
  options: {
    model: { type: 'string', default: 'fp32' },
    data: { type: 'string', default: 'training/splits/val.json' },
    subset: { type: 'string', default: 'full-field' },
    'boost-from': { type: 'string' },
  },
});
const model = await loadModel(a.model);
const truth = await loadTruth(a.data!);
truth.images = truth.images.filter((t) => t.subset === a.subset);
const { images } = await collect(model, truth);
const inner = model.metadata.thresholds.RBC;
const touches = (b: Box, w: number, h: number) => b[0] <= 3 || b[1] <= 3 || b[2] >= w - 3 || b[3] >= h - 3;
console.log(`${images.length} images (${a.subset}), RBC, interior threshold ${inner}`);
for (const border of [inner, 0.4, 0.35, 0.3, 0.25, 0.2]) {
  const kept: EvalImage[] = images.map((im) => ({
    ...im,
    candidates: im.candidates.filter((c) => c.label !== 'RBC' || c.score >= (touches(c.box, im.width ?? Infinity, im.height ?? Infinity) ? border : inner)),
  }));
  const r = classAt(kept, 'RBC', 0);
  console.log(`border threshold ${border.toFixed(2)}: found ${r.tp}, missed ${r.fn}, false ${r.fp}, F1 ${(100 * (r.f1 ?? 0)).toFixed(1)}`);
}

// the expert's border cells missed at the model's threshold: a box below it, or none in place?
const missed = { 'box at IoU >= 0.5 scoring 0.30 up': 0, 'box at IoU >= 0.5 scoring below 0.30': 0, 'no box at IoU >= 0.5': 0 };
const shape: number[] = [];
for (const im of images) {
  const rbc = im.candidates.filter((c) => c.label === 'RBC');
  for (const g of im.truth.filter((t) => t.label === 'RBC' && touches(t.box, im.width ?? Infinity, im.height ?? Infinity))) {
    const placed = rbc.filter((c) => iou(c.box, g.box) >= 0.5);
    if (placed.some((c) => c.score >= inner)) continue;
    const best = Math.max(-1, ...placed.map((c) => c.score));
    missed[best >= 0.3 ? 'box at IoU >= 0.5 scoring 0.30 up' : best >= 0 ? 'box at IoU >= 0.5 scoring below 0.30' : 'no box at IoU >= 0.5']++;
    const [w, h] = [g.box[2] - g.box[0], g.box[3] - g.box[1]];
    shape.push(Math.min(w, h) / Math.max(w, h));
  }
}
shape.sort((x, y) => x - y);
console.log(`border cells missed at ${inner}: ${JSON.stringify(missed)}; short/long side median ${shape[shape.length >> 1]?.toFixed(2) ?? '-'}`);

const from = a['boost-from'];
if (from) {
  const all = await loadTruth(a.data!);
  all.images = all.images.filter((t) => t.subset === from);
  const calib = (await collect(model, all)).images;
  const boost = (ims: EvalImage[], d: number) =>
    ims.map((im) => ({
      ...im,
      candidates: im.candidates.map((c) =>
        c.label === 'RBC' && touches(c.box, im.width ?? Infinity, im.height ?? Infinity) ? { ...c, score: Math.min(1, c.score + d) } : c,
      ),
    }));
  const countAcc = (r: ReturnType<typeof classAt>) => 100 * r.accuracy;
  for (const d of [0, 0.05, 0.08, 0.1, 0.12, 0.15]) {
    const c = boost(calib, d);
    const ts = Array.from({ length: 41 }, (_, i) => Math.round((0.3 + i * 0.01) * 100) / 100);
    const t = ts.reduce((b, x) => ((classAt(c, 'RBC', x).f1 ?? 0) > (classAt(c, 'RBC', b).f1 ?? 0) ? x : b), ts[0]!);
    const [rc, rs] = [classAt(c, 'RBC', t), classAt(boost(images, d), 'RBC', t)];
    console.log(
      `boost ${d.toFixed(2)}: threshold ${t.toFixed(2)} (best F1 on ${from}: ${(100 * (rc.f1 ?? 0)).toFixed(2)}, count accuracy ${countAcc(rc).toFixed(1)} %); ${a.subset}: F1 ${(100 * (rs.f1 ?? 0)).toFixed(2)}, count accuracy ${countAcc(rs).toFixed(1)} %`,
    );
  }
}
