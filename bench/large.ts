/**
 * Large smears: a smear made by tiling a sample (default 12000 x 9000) counted with the
 * current tiling, with the first release's (1024 px tiles, 320 px overlap) and with the int8
 * model, each in its own process so that each peak memory (maxRSS) is its own; then, on a
 * 4000 x 3000 smear that also fits one network pass, tiled counts against whole-image counts.
 * Usage: node dist/bench/large.js [W H] [--out docs/large.json]
 *        node dist/bench/large.js --one FILE SIZE OVERLAP [fp32|int8]   (one measurement)
 */
import { execFileSync } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { openOnnx } from '../src/adapters/onnx.js';
import { applyThresholds } from '../src/core/count.js';
import { detectPixels, TILE_OVERLAP, TILE_SIZE } from '../src/core/pipeline.js';
import { decodeRgb, readImagesOnce } from '../src/adapters/image.js';
import { defaultModelPath, loadModel } from '../src/index.js';
import { SAMPLES } from '../test/helpers.js';
import { machine } from './smears.js';

export async function makeLargeSmear(width: number, height: number, out: string): Promise<string> {
  if (existsSync(out)) return out;
  const sample = join(SAMPLES, 'BloodImage_00011.jpg');
  const overlays: sharp.OverlayOptions[] = [];
  for (let y = 0; y < height; y += 480) for (let x = 0; x < width; x += 640) overlays.push({ input: sample, left: x, top: y });
  await sharp({
    create: { width: Math.ceil(width / 640) * 640, height: Math.ceil(height / 480) * 480, channels: 3, background: '#fff' },
    limitInputPixels: false,
  })
    .composite(overlays)
    .jpeg({ quality: 90 })
    .toFile(out + '.full.jpg');
  await sharp(out + '.full.jpg', { limitInputPixels: false })
    .extract({ left: 0, top: 0, width, height })
    .jpeg({ quality: 90 })
    .toFile(out);
  return out;
}

async function one(file: string, size: number, overlap: number, precision: 'fp32' | 'int8' = 'fp32') {
  readImagesOnce(); // as the CLI does
  const model = await loadModel(precision);
  const t0 = performance.now();
  const r = await model.count(file, { tiling: { size, overlap } });
  const ms = performance.now() - t0;
  return {
    tiling: `${size} px tiles, ${overlap} px overlap`,
    model: precision,
    width: r.width,
    height: r.height,
    tiles: r.tiles,
    counts: r.counts,
    seconds: +(ms / 1000).toFixed(2),
    maxRssMB: Math.round(process.resourceUsage().maxRSS / 1024),
  };
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const args = process.argv.slice(2);
  if (args[0] === '--one') {
    console.log(JSON.stringify(await one(args[1]!, Number(args[2]), Number(args[3]), args[4] === 'int8' ? 'int8' : 'fp32')));
  } else {
    const outAt = args.indexOf('--out');
    const out = outAt >= 0 ? args.splice(outAt, 2)[1] : null;
    const [w, h] = [Number(args[0] ?? 12000), Number(args[1] ?? 9000)];
    const file = await makeLargeSmear(w, h, join(tmpdir(), `hemocount-large-${w}x${h}.jpg`));
    const measure = (size: number, overlap: number, precision = 'fp32') =>
      JSON.parse(execFileSync(process.execPath, [process.argv[1]!, '--one', file, String(size), String(overlap), precision], { encoding: 'utf8' }));
    const current = measure(TILE_SIZE, TILE_OVERLAP);
    const first = measure(1024, 320);
    const int8 = measure(TILE_SIZE, TILE_OVERLAP, 'int8');
    for (const r of [current, first, int8]) console.log(JSON.stringify(r));

    // agreement where both fit: tiles (forced small) against one network pass, per model
    const mid = await makeLargeSmear(4000, 3000, join(tmpdir(), 'hemocount-large-4000x3000.jpg'));
    const agreement = [];
    const pixels = await decodeRgb(mid);
    for (const [precision, tilings] of [
      [
        'fp32',
        [
          [TILE_SIZE, TILE_OVERLAP],
          [1024, 320],
        ],
      ],
      ['int8', [[TILE_SIZE, TILE_OVERLAP]]],
    ] as const) {
      const model = await loadModel(precision);
      const onnx = await openOnnx(defaultModelPath(precision));
      const whole = applyThresholds(await detectPixels(onnx.run.bind(onnx), onnx.metadata, pixels), model.thresholds());
      for (const [size, overlap] of tilings) {
        // scale 1: the same pixels as the one pass, so only the tiling differs
        const tiled = await model.count(mid, { scale: 1, tiling: { size, overlap } });
        agreement.push({
          model: precision,
          tiling: `${size} px tiles, ${overlap} px overlap`,
          tiles: tiled.tiles,
          tiledCounts: tiled.counts,
          wholeCounts: whole.counts,
          differencePct: Object.fromEntries(
            Object.entries(whole.counts).map(([k, v]) => [k, +((100 * (tiled.counts[k as keyof typeof whole.counts] - v)) / Math.max(1, v)).toFixed(2)]),
          ),
        });
      }
      await onnx.release();
    }
    console.log(JSON.stringify(agreement));
    const report = {
      machine: machine(),
      image: `${w} x ${h}`,
      current,
      firstRelease: first,
      speedup: +(first.seconds / current.seconds).toFixed(2),
      int8,
      agreement,
    };
    if (out) writeFileSync(out, JSON.stringify(report, null, 1) + '\n');
  }
}
