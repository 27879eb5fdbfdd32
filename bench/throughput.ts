/**
 * Folder throughput in one run: `hemocount count` on the same 100 CBC smears (640 x 480),
 * without and with annotated pictures, one process (--jobs 1: one network pass at a time,
 * onnxruntime's threads on both cores) and two worker threads (--jobs 2: one pass per core),
 * fp32 and int8; one core alone for the scaling.
 * Wall time of the whole command (process start and model load included), best of 2.
 * Usage: node dist/bench/throughput.js [N] [--out docs/throughput.json]
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CLI, ROOT } from '../test/helpers.js';
import { machine, smearFolder, timeCount } from './smears.js';

const n = Number(process.argv[2] && !process.argv[2].startsWith('--') ? process.argv[2] : 100);
const outAt = process.argv.indexOf('--out');
const outFile = outAt > 0 ? process.argv[outAt + 1] : undefined;
if (outAt > 0 && !outFile) throw new Error('--out needs a file name');
const { dir, images } = smearFolder(n, 'hemocount-bench-throughput-');

const time = (args: string[]) => {
  let best = Infinity;
  for (let k = 0; k < 2; k++) best = Math.min(best, timeCount(CLI, ROOT, dir, [images, ...args]));
  return { seconds: +best.toFixed(2), imagesPerS: +(n / best).toFixed(1) };
};
const pics = ['--out', join(dir, 'out')];
const fp32 = ['--model', 'fp32'];
const results: Record<string, { seconds: number; imagesPerS: number }> = {
  'fp32, no pictures, one core (--jobs 1 --threads 1)': time([...fp32, '--jobs', '1', '--threads', '1']),
  'fp32, no pictures, --jobs 1': time([...fp32, '--jobs', '1']),
  'fp32, no pictures, --jobs 2': time([...fp32, '--jobs', '2']),
  'fp32, --out PNG, --jobs 1': time([...fp32, ...pics, '--jobs', '1']),
  'fp32, --out PNG, --jobs 2': time([...fp32, ...pics, '--jobs', '2']),
  'fp32, --out JPEG, --jobs 2': time([...fp32, ...pics, '--out-format', 'jpg', '--jobs', '2']),
  'int8, no pictures, --jobs 2': time(['--model', 'int8', '--jobs', '2']),
  'int8, --out PNG, --jobs 2': time(['--model', 'int8', ...pics, '--jobs', '2']),
  'int8, --out JPEG, --jobs 2': time(['--model', 'int8', ...pics, '--out-format', 'jpg', '--jobs', '2']),
};
const doc = {
  machine: machine(),
  images: n,
  note: 'wall time of the whole command (process start and model load included), best of 2 runs',
  results,
};
console.log(JSON.stringify(doc, null, 1));
if (outFile) writeFileSync(outFile, JSON.stringify(doc, null, 1) + '\n');
