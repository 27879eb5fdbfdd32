/**
 * Where one count's time goes: each stage of `count(file, { scale: 1 })` timed alone on the
 * bundled samples (the same work as PyTorch eager's in bench/speed.ts), p50 over the images
 * and passes, next to the whole count timed through the library in the same run.
 * Usage: node dist/bench/stages.js [--model int8|fp32|FILE] [--passes 20] [--out docs/stages.json]
 */
import { readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { applyThresholds } from '../src/core/count.js';
import { decodeDetections, paddedSize } from '../src/core/decode.js';
import { toTensor } from '../src/core/pipeline.js';
import { decodeRgb, headerPixels, imageSource, probe } from '../src/adapters/image.js';
import { openOnnx } from '../src/adapters/onnx.js';
import { defaultModelPath, lowestScore, loadModel } from '../src/detector.js';
import { SAMPLES } from '../test/helpers.js';
import { machine } from './smears.js';

const { values: a } = parseArgs({
  options: { model: { type: 'string', default: 'int8' }, passes: { type: 'string', default: '20' }, out: { type: 'string' } },
});
const path = a.model === 'int8' || a.model === 'fp32' ? defaultModelPath(a.model) : a.model!;
const onnx = await openOnnx(path);
const model = await loadModel(path, {});
const meta = onnx.metadata;
const th = model.thresholds();
const floor = lowestScore(th);
const files = readdirSync(SAMPLES)
  .filter((f) => f.endsWith('.jpg'))
  .map((f) => join(SAMPLES, f));

const stages = ['read file', 'size', 'decode image', 'tensor', 'network', 'boxes + NMS', 'thresholds'] as const;
const t: Record<string, number[]> = Object.fromEntries([...stages, 'stages summed', 'whole count'].map((s) => [s, []]));
const time = async <T>(stage: string, f: () => T | Promise<T>): Promise<T> => {
  const t0 = performance.now();
  const v = await f();
  t[stage]!.push(performance.now() - t0);
  return v;
};
// stages first, whole counts after: two sessions used in turn would find each other's
// onnxruntime threads still spinning (see bench/speed.ts)
for (let pass = -2; pass < Number(a.passes); pass++) {
  for (const f of files) {
    const n = t['network']!.length;
    // as the library reads a file: once, then its size from the header, then the pixels
    const src = await time('read file', () => imageSource(f));
    await time('size', async () => (src instanceof Uint8Array && headerPixels(src)) || (await probe(src, f)).width);
    const img = await time('decode image', () => decodeRgb(src, f));
    const [ph, pw] = paddedSize(meta, img.height, img.width);
    const x = await time('tensor', () => toTensor(img, meta, ph, pw));
    const out = await time('network', () => onnx.run(x));
    const c = await time('boxes + NMS', () => decodeDetections(meta, out.scores, out.deltas, img.height, img.width, floor));
    await time('thresholds', () => applyThresholds(c, th));
    t['stages summed']!.push(stages.reduce((s, k) => s + t[k]!.at(-1)!, 0));
    if (pass < 0) for (const k of stages) t[k]!.length = n; // warm-up passes are not kept
    if (pass < 0) t['stages summed']!.length = n;
  }
}
await onnx.release();
for (let pass = -2; pass < Number(a.passes); pass++) {
  for (const f of files) {
    const t0 = performance.now();
    await model.count(f, { scale: 1 });
    if (pass >= 0) t['whole count']!.push(performance.now() - t0);
  }
}
const p50 = (xs: number[]) => +[...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)]!.toFixed(2);
const report = {
  machine: machine(),
  model: path,
  images: files.length,
  passes: Number(a.passes),
  p50_ms: Object.fromEntries(Object.entries(t).map(([k, v]) => [k, p50(v)])),
};
console.log(`${report.machine}; ${path}; ${files.length} samples x ${a.passes} passes, p50 ms per image`);
for (const [k, v] of Object.entries(report.p50_ms)) console.log(`${k.padEnd(14)} ${v.toFixed(2).padStart(7)}`);
if (a.out) writeFileSync(a.out, `${JSON.stringify(report, null, 2)}\n`);
