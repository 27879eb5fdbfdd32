/**
 * Speed benchmark: the network's forward pass at 640x480 in onnxruntime-node (p50/p90),
 * the whole count of each sample (decode + network + decoding + NMS), and the cost of a
 * threshold sweep against one evaluation pass, and PyTorch eager on the same weights and
 * images (the machine's torch, found as `hemocount train` finds it).
 * Usage: node dist/bench/speed.js [--model M] [--runs 200] [--data DIR]  (runs/10 passes over the samples for the whole counts)
 */
import { spawnSync } from 'node:child_process';
import { availableParallelism } from 'node:os';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { paddedSize } from '../src/core/decode.js';
import { evaluate } from '../src/core/metrics.js';
import { toTensor } from '../src/core/pipeline.js';
import { loadModel } from '../src/index.js';
import { decodeRgb } from '../src/adapters/image.js';
import { loadTruth } from '../src/adapters/files.js';
import { openOnnx } from '../src/adapters/onnx.js';
import { defaultModelPath } from '../src/detector.js';
import { collect } from '../src/evaluation.js';
import { findTorchPython } from '../src/adapters/python.js';
import { ROOT, SAMPLES } from '../test/helpers.js';
import { machine } from './smears.js';

const { values: a } = parseArgs({
  options: { model: { type: 'string' }, runs: { type: 'string', default: '200' }, data: { type: 'string' }, threads: { type: 'string' } },
});
const runs = Number(a.runs);
const q = (xs: number[], p: number) => {
  const v = [...xs].sort((x, y) => x - y)[Math.min(xs.length - 1, Math.floor(p * xs.length))];
  if (v === undefined) throw new Error('no timings to summarise: --runs must be at least 1, and the samples folder must hold images');
  return v;
};
// fp32 by default: PyTorch eager can only load full-precision weights (int8 is compared below)
const path = a.model ?? defaultModelPath('fp32');

const threads = a.threads ? Number(a.threads) : undefined;
/** Passes over the samples for the whole counts (and PyTorch eager's). */
const passes = Math.max(1, Math.round(runs / 10));
const onnx = await openOnnx(path, threads);
const img = await decodeRgb(join(SAMPLES, 'BloodImage_00004.jpg'));
const [ph, pw] = paddedSize(onnx.metadata, img.height, img.width);
const input = toTensor(img, onnx.metadata, ph, pw);
for (let i = 0; i < 5; i++) await onnx.run(input);
const fwd: number[] = [];
for (let i = 0; i < runs; i++) {
  const t = performance.now();
  await onnx.run(input);
  fwd.push(performance.now() - t);
}

// int8 against fp32 on the same image (each fed the input it takes), interleaved in one run (the machine's speed drifts)
let int8: Record<string, number | string> | undefined;
if (!a.model) {
  const [f, i8] = [await openOnnx(defaultModelPath('fp32'), threads), await openOnnx(defaultModelPath('int8'), threads)];
  const inputOf = new Map([f, i8].map((m) => [m, toTensor(img, m.metadata, ph, pw)]));
  for (let i = 0; i < 5; i++) for (const m of [f, i8]) await m.run(inputOf.get(m)!);
  const tf: number[] = [];
  const ti: number[] = [];
  // in blocks of 10: onnxruntime's threads spin a while after a run, and a session switched
  // every run found the other's threads still spinning (fp32 timed 83 ms here against 55 ms alone)
  for (let i = 0; i < runs; i += 10) {
    for (const [m, out] of [
      [f, tf],
      [i8, ti],
    ] as const) {
      for (let k = 0; k < Math.min(10, runs - i); k++) {
        const t = performance.now();
        await m.run(inputOf.get(m)!);
        out.push(performance.now() - t);
      }
    }
  }
  int8 = {
    fp32_p50: +q(tf, 0.5).toFixed(1),
    int8_p50: +q(ti, 0.5).toFixed(1),
    speedup: +(q(tf, 0.5) / q(ti, 0.5)).toFixed(2),
    fp32_mb: +(f.bytes.length / 2 ** 20).toFixed(1),
    int8_mb: +(i8.bytes.length / 2 ** 20).toFixed(1),
  };
}

const model = await loadModel(path, { threads });
const files = readdirSync(SAMPLES)
  .filter((f) => f.endsWith('.jpg'))
  .map((f) => join(SAMPLES, f));
// whole counts, this model and (when it is the bundled fp32 one) the default int8 model, in turn:
// as a user runs them (--scale auto: a close-up outside the magnification band costs extra
// passes) and doing PyTorch eager's work (--scale 1: one pass at native resolution)
const int8Model = a.model ? undefined : await loadModel('int8', { threads });
const timed = { auto: [] as number[], autoInt8: [] as number[], one: [] as number[], oneInt8: [] as number[] };
// one model at a time within a pass, for the same reason as the blocks above
const runsOf = [
  [
    model,
    [
      ['auto', timed.auto],
      [1, timed.one],
    ],
  ],
  ...(int8Model
    ? [
        [
          int8Model,
          [
            ['auto', timed.autoInt8],
            [1, timed.oneInt8],
          ],
        ],
      ]
    : []),
] as [typeof model, ['auto' | 1, number[]][]][];
for (let r = 0; r < passes; r++) {
  for (const [m, ways] of runsOf) {
    for (const f of files) {
      for (const [scale, out] of ways) {
        const t = performance.now();
        await m.count(f, { scale });
        out.push(performance.now() - t);
      }
    }
  }
}
const stats = (xs: number[]) => ({ images: xs.length, p50: +q(xs, 0.5).toFixed(1), p90: +q(xs, 0.9).toFixed(1) });

// PyTorch eager on the same weights and images, where a Python with torch is found
let eager: Record<string, unknown> | undefined;
try {
  const { python } = findTorchPython();
  const r = spawnSync(
    python,
    ['-m', 'hemocount_train', 'eager-bench', '--model', path, '--runs', String(passes), '--threads', String(availableParallelism()), ...files],
    { cwd: join(ROOT, 'training'), encoding: 'utf8' },
  );
  if (r.status !== 0) throw new Error(r.stderr.trim().split('\n').pop());
  const e = JSON.parse(r.stdout) as { per_image_ms: { p50: number } };
  const x = (xs: number[]) => (xs.length ? +(e.per_image_ms.p50 / q(xs, 0.5)).toFixed(1) : undefined);
  eager = {
    ...e,
    // eager makes one pass per image at native resolution: --scale 1 is the same work
    hemocount_speedup_p50: x(timed.one),
    hemocount_int8_speedup_p50: x(timed.oneInt8),
    hemocount_scale_auto_speedup_p50: x(timed.auto),
  };
} catch (e) {
  eager = { skipped: (e as Error).message.split('\n')[0] };
}

const truth = await loadTruth(a.data ?? SAMPLES);
const got = await collect(model, truth);
const t1 = performance.now();
evaluate(got.images); // the paper's 14 thresholds
const sweepMs = performance.now() - t1;

const out = {
  machine: machine(),
  model: { file: path, name: onnx.metadata.name, sha256: onnx.sha256.slice(0, 12) },
  forward_640x480_ms: { input: `${pw}x${ph} (padded)`, runs, p50: +q(fwd, 0.5).toFixed(1), p90: +q(fwd, 0.9).toFixed(1), min: +Math.min(...fwd).toFixed(1) },
  ...(int8 && { forward_int8_vs_fp32_ms: int8 }),
  count_per_image_ms: stats(timed.auto),
  ...(timed.autoInt8.length && { count_per_image_int8_ms: stats(timed.autoInt8) }),
  count_per_image_scale1_ms: stats(timed.one),
  ...(timed.oneInt8.length && { count_per_image_int8_scale1_ms: stats(timed.oneInt8) }),
  pytorch_eager_same_weights: eager,
  sweep: {
    images: got.images.length,
    evaluation_pass_ms: Math.round(got.ms),
    sweep_ms: +sweepMs.toFixed(1),
    ratio_pass_plus_sweep_to_pass: +((got.ms + sweepMs) / got.ms).toFixed(3),
  },
};
console.log(JSON.stringify(out, null, 2));
