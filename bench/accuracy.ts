/**
 * Accuracy benchmark beyond the plain evaluation: the magnification sweep (validation
 * images resized to 0.5x-2x, counted with `--scale auto` and with `--scale 1`) and the gain
 * and cost of test-time augmentation, per subset, at the model's thresholds.
 * Usage: node dist/bench/accuracy.js [--data training/splits/val.json] [--model M] [--out docs/accuracy.json]
 */
import { parseArgs } from 'node:util';
import sharp from 'sharp';
import { classAt, type EvalImage, subsets } from '../src/core/metrics.js';
import { CLASSES, type PerClass, perClass } from '../src/core/types.js';
import type { DetectOptions } from '../src/core/detect.js';
import { loadTruth, writeAtomic } from '../src/adapters/files.js';
import { loadModel } from '../src/index.js';
import { machine } from './smears.js';

const { values: a } = parseArgs({
  options: {
    data: { type: 'string', default: 'training/splits/val.json' },
    model: { type: 'string' },
    out: { type: 'string', default: 'docs/accuracy.json' },
    scales: { type: 'string', default: '0.5,0.75,1,1.5,2' },
  },
});
const model = await loadModel(a.model);
const truth = await loadTruth(a.data!);
const th = model.metadata.thresholds;

async function run(factor: number, opts: DetectOptions): Promise<{ images: EvalImage[]; ms: number; scales: number[] }> {
  const images: EvalImage[] = [];
  const scales: number[] = [];
  let ms = 0;
  for (const t of truth.images) {
    const meta = await sharp(t.file).metadata();
    const w = Math.max(1, Math.round(meta.width! * factor));
    const h = Math.max(1, Math.round(meta.height! * factor));
    const { data, info } = await sharp(t.file).resize(w, h, { fit: 'fill' }).removeAlpha().raw().toBuffer({ resolveWithObject: true });
    const sx = info.width / meta.width!;
    const sy = info.height / meta.height!;
    const t0 = performance.now();
    const det = await model.detect({ data: new Uint8Array(data), width: info.width, height: info.height, channels: 3 }, opts);
    ms += performance.now() - t0;
    scales.push(det.scale);
    images.push({
      file: t.file,
      subset: t.subset,
      width: info.width,
      height: info.height,
      candidates: det.candidates,
      truth: t.truth.map((g) => ({ label: g.label, box: [g.box[0] * sx, g.box[1] * sy, g.box[2] * sx, g.box[3] * sy] })),
    });
  }
  return { images, ms, scales };
}

const f1s = (images: EvalImage[]): PerClass<number | null> =>
  perClass((c) => {
    const r = classAt(images, c, th[c]);
    return r.f1 === null ? null : +(100 * r.f1).toFixed(2);
  });
const bySubset = (images: EvalImage[]): Record<string, PerClass<number | null>> => ({
  all: f1s(images),
  ...Object.fromEntries([...subsets(images)].map(([n, ims]) => [n, f1s(ims)])),
});
const pct = (v: number | null | undefined) => (v == null ? '-' : v.toFixed(1));

const sweep: Record<string, object> = {};
for (const s of a.scales!.split(',').map(Number)) {
  const auto = await run(s, { scale: 'auto' });
  const off = await run(s, { scale: 1 });
  const sorted = [...auto.scales].sort((x, y) => x - y);
  sweep[String(s)] = { auto: bySubset(auto.images), off: bySubset(off.images), autoScaleMedian: sorted[Math.floor(sorted.length / 2)] };
  console.error(`scale ${s}: median factor ${sorted[Math.floor(sorted.length / 2)]}`);
  for (const [n, v] of Object.entries(bySubset(auto.images)))
    console.error(
      `  ${n}: auto ${CLASSES.map((c) => `${c} ${pct(v[c])}`).join(', ')}; off ${CLASSES.map((c) => `${c} ${pct(bySubset(off.images)[n]?.[c])}`).join(', ')}`,
    );
}

const plain = await run(1, { scale: 1 });
const tta = await run(1, { scale: 1, tta: true });
const out = {
  machine: machine(),
  model: { ...model.info, sha256: model.info.sha256.slice(0, 12) },
  data: a.data,
  thresholds: th,
  note: 'F1 [%] at the model thresholds, IoU 0.5; images resized with sharp (Lanczos) before counting',
  scaleSweep: sweep,
  tta: { plain: bySubset(plain.images), tta: bySubset(tta.images), costRatio: +(tta.ms / plain.ms).toFixed(2) },
};
console.error(`TTA: plain ${JSON.stringify(out.tta.plain)} tta ${JSON.stringify(out.tta.tta)} cost x${out.tta.costRatio}`);
await writeAtomic(a.out!, JSON.stringify(out, null, 1) + '\n');
console.log(JSON.stringify(out, null, 1));
