/**
 * Counts a large smear made by tiling a sample (default 6000x4000) and reports time and
 * peak memory (maxRSS) of this process. Usage: node dist/bench/large.js [W H] [--keep FILE]
 */
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { loadModel } from '../src/index.js';
import { SAMPLES } from '../test/helpers.js';

export async function makeLargeSmear(width: number, height: number, out: string): Promise<string> {
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

if (import.meta.url === `file://${process.argv[1]}`) {
  const [w, h] = [Number(process.argv[2] ?? 6000), Number(process.argv[3] ?? 4000)];
  const file = await makeLargeSmear(w, h, join(tmpdir(), `hemocount-large-${w}x${h}.jpg`));
  const model = await loadModel();
  const t0 = performance.now();
  const r = await model.count(file);
  const ms = performance.now() - t0;
  console.log(
    JSON.stringify({
      width: r.width,
      height: r.height,
      tiles: r.tiles,
      counts: r.counts,
      seconds: +(ms / 1000).toFixed(2),
      maxRssMB: Math.round(process.resourceUsage().maxRSS / 1024),
    }),
  );
}
