import sharp from 'sharp';
import { classAt } from './dist/src/core/metrics.js';
import { loadTruth } from './dist/src/adapters/files.js';
import { loadModel } from './dist/src/index.js';
const model = await loadModel('fp32');
const truth = await loadTruth('training/splits/val.json');
truth.images = truth.images.filter(t => t.subset === (process.env.SUBSET ?? 'full-field'));
const th = model.metadata.thresholds;
const cache = new Map();
async function run(factor, optsFn) {
  const images = [], scales = [];
  for (const t of truth.images) {
    const meta = await sharp(t.file).metadata();
    const w = Math.max(1, Math.round(meta.width * factor)), h = Math.max(1, Math.round(meta.height * factor));
    const k = t.file + factor;
    if (!cache.has(k)) cache.set(k, await sharp(t.file).resize(w, h, { fit: 'fill' }).removeAlpha().raw().toBuffer({ resolveWithObject: true }));
    const { data, info } = cache.get(k);
    const sx = info.width / meta.width, sy = info.height / meta.height;
    const det = await model.detect({ data: new Uint8Array(data), width: info.width, height: info.height, channels: 3 }, optsFn(factor));
    scales.push(det.scale);
    images.push({ file: t.file, width: info.width, height: info.height, candidates: det.candidates, truth: t.truth.map(g => ({ label: g.label, box: [g.box[0]*sx, g.box[1]*sy, g.box[2]*sx, g.box[3]*sy] })) });
  }
  const f1 = Object.fromEntries(['RBC','WBC','Platelets'].map(c => [c, +(100*classAt(images, c, th[c]).f1).toFixed(1)]));
  scales.sort((a,b)=>a-b);
  const p = 0; return { f1, median: scales[scales.length>>1], passes: +(p/images.length).toFixed(2) };
}
const modes = (process.env.MODES ?? 'auto,oracle').split(',');
for (const s of (process.env.SCALES ?? '0.5,0.75,1.5,2').split(',').map(Number)) {
  for (const m of modes) {
    const r = await run(s, f => m === 'auto' ? {} : m === 'oracle' ? { scale: Math.round(1000/f)/1000 } : { scale: 1 });
    console.log(s, m, JSON.stringify(r));
  }
}
