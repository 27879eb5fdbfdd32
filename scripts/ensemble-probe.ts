/**
 * Probe for models/LIMITS.md: is what the model gets wrong the variance between training runs?
 * Prediction ensembles of several fine-tunes (boxes fused as --tta fuses its passes) against
 * each of them alone: best F1 per class over the paper's threshold sweep, per subset.
 * Usage: node dist/scripts/ensemble-probe.js [--data training/splits/val.json] MODEL.onnx MODEL.onnx ...
 */
import { parseArgs } from 'node:util';
import { loadTruth } from '../src/adapters/files.js';
import { mergePasses } from '../src/core/detect.js';
import { classAt, type EvalImage, PAPER_THRESHOLDS } from '../src/core/metrics.js';
import { CLASSES } from '../src/core/types.js';
import { collect } from '../src/evaluation.js';
import { loadModel } from '../src/index.js';

const { values: a, positionals: files } = parseArgs({ options: { data: { type: 'string', default: 'training/splits/val.json' } }, allowPositionals: true });
if (files.length < 2) throw new Error('name two or more models');
const truth = await loadTruth(a.data!);
const runs: EvalImage[][] = [];
let nms = 0.4;
for (const f of files) {
  const model = await loadModel(f);
  nms = model.metadata.postprocess.nms_iou;
  runs.push((await collect(model, truth)).images);
  await model.release();
}
const sweep = PAPER_THRESHOLDS;
const best = (ims: EvalImage[], subset: string) => {
  const s = ims.filter((i) => i.subset === subset);
  const f1 = CLASSES.map((c) => Math.max(...sweep.map((t) => classAt(s, c, t).f1 ?? 0)));
  return `${CLASSES.map((c, i) => `${c} ${(100 * f1[i]!).toFixed(2)}`).join(', ')}; mean ${((100 * f1.reduce((x, y) => x + y, 0)) / 3).toFixed(2)}`;
};
const subsets = [...new Set(runs[0]!.map((i) => i.subset ?? 'all'))];
const show = (name: string, ims: EvalImage[]) => console.log(`${name}\n${subsets.map((s) => `  ${s}: ${best(ims, s)}`).join('\n')}`);
for (const [i, f] of files.entries()) show(f, runs[i]!);
const fused = runs[0]!.map((im, k) => ({
  ...im,
  candidates: mergePasses(
    runs.map((r) => r[k]!.candidates),
    nms,
    0.55,
    0.05,
  ),
}));
show(`ensemble of all ${files.length}`, fused);
