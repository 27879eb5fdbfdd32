/** Decoding through sharp: orientation, grey / 16-bit / alpha inputs, bad files, the annotated picture. */
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import sharp from 'sharp';
import { decodeRgb, drawAnnotated, overlaySvg, probe, sniffImageType } from '../src/adapters/image.js';
import type { Detection, ModelMetadata } from '../src/core/types.js';
import { loadModel } from '../src/index.js';
import { MODEL, SAMPLES, tmp } from './helpers.js';

const SAMPLE = join(SAMPLES, 'BloodImage_00011.jpg');

test('EXIF orientation is applied: a portrait-tagged JPEG is read upright', async () => {
  const dir = tmp();
  // store the pixels rotated 90 degrees anticlockwise and tag them "rotate 90 clockwise to view" (6)
  const f = join(dir, 'tagged.jpg');
  await sharp(SAMPLE).rotate(270).withMetadata({ orientation: 6 }).jpeg().toFile(f);
  assert.deepEqual(await probe(f).then((p) => [p.width, p.height]), [640, 480]);
  const a = await decodeRgb(f);
  const b = await decodeRgb(SAMPLE);
  assert.deepEqual([a.width, a.height], [640, 480]);
  let diff = 0;
  for (let i = 0; i < a.data.length; i += 997) diff += Math.abs(a.data[i]! - b.data[i]!);
  assert.ok(diff / (a.data.length / 997) < 12, 'same picture after orientation');
});

test('grey, 16-bit and alpha images become 8-bit RGB and are counted', async () => {
  const dir = tmp();
  const model = await loadModel(MODEL);
  const ref = await model.count(SAMPLE);
  const variants = {
    'grey.png': sharp(SAMPLE).greyscale().png(),
    'rgb16.png': sharp(SAMPLE).toColourspace('rgb16').png(),
    'alpha.png': sharp(SAMPLE).ensureAlpha(1).png(),
    'tiff.tif': sharp(SAMPLE).tiff(),
    'webp.webp': sharp(SAMPLE).webp({ lossless: true }),
  };
  for (const [name, img] of Object.entries(variants)) {
    const f = join(dir, name);
    await img.toFile(f);
    const raw = await decodeRgb(f);
    assert.equal(raw.channels, 3, name);
    assert.equal(raw.data.length, 640 * 480 * 3, name);
    const r = await model.count(f);
    if (name !== 'grey.png') assert.equal(r.counts.WBC, ref.counts.WBC, name);
    assert.ok(r.counts.RBC > 0.5 * ref.counts.RBC, `${name}: ${r.counts.RBC} vs ${ref.counts.RBC}`);
  }
});

test('file types are told by their bytes', () => {
  assert.equal(sniffImageType(readFileSync(SAMPLE)), 'jpeg');
  assert.equal(sniffImageType(new TextEncoder().encode('hello world')), null);
});

test('bad files give errors that name the file and the problem', async () => {
  const dir = tmp();
  const bad = join(dir, 'half.jpg');
  const jpg = readFileSync(SAMPLE);
  writeFileSync(bad, jpg.subarray(0, 4000));
  await assert.rejects(decodeRgb(bad), /half\.jpg: corrupt or truncated image/);
  writeFileSync(join(dir, 'text.png'), 'not a png');
  await assert.rejects(decodeRgb(join(dir, 'text.png')), /text\.png: not an image/);
  await assert.rejects(decodeRgb(join(dir, 'missing.jpg')), /missing\.jpg: /);
});

test('the annotated picture has the boxes in the paper colours', async () => {
  const model = await loadModel(MODEL);
  const r = await model.count(SAMPLE);
  const png = await drawAnnotated(SAMPLE, r.detections, { meta: model.metadata, counts: r.counts, uncertain: r.uncertain });
  const { data, info } = await sharp(png).raw().toBuffer({ resolveWithObject: true });
  const wbc = r.detections.find((d) => d.label === 'WBC' && !d.uncertain)!;
  // the left edge of the WBC box, half way down, is light blue (#66ccff)
  const x = Math.round(wbc.box[0]);
  const y = Math.round((wbc.box[1] + wbc.box[3]) / 2);
  const px = (xx: number) => [...data.subarray((y * info.width + xx) * info.channels, (y * info.width + xx) * info.channels + 3)];
  const near = [x - 1, x, x + 1].map(px).some(([rr = NaN, g = NaN, b = NaN]) => Math.abs(rr - 0x66) < 30 && Math.abs(g - 0xcc) < 30 && Math.abs(b - 0xff) < 30);
  assert.ok(near, `WBC edge colour ${JSON.stringify([x - 1, x, x + 1].map(px))}`);
});

test('box labels are sized by the cells, not the picture: a big mosaic keeps legible, small labels', () => {
  const model = {
    classes: [
      { name: 'RBC', colour: '#ff8c00' },
      { name: 'WBC', colour: '#66ccff' },
      { name: 'Platelets', colour: '#1f3fbf' },
    ],
  } as unknown as ModelMetadata;
  const cells = (n: number): Detection[] =>
    Array.from({ length: n }, (_, i) => ({
      label: 'RBC',
      score: 0.9,
      uncertain: false,
      box: [(i % 10) * 100, Math.floor(i / 10) * 100, (i % 10) * 100 + 96, Math.floor(i / 10) * 100 + 96],
    }));
  const o = { meta: model, counts: { RBC: 1, WBC: 0, Platelets: 0 }, uncertain: { RBC: 0, WBC: 0, Platelets: 0 } };
  const font = (svg: string) => Number(/<text[^>]*font-size="(\d+)"[^>]*>RBC/.exec(svg)![1]);
  const small = overlaySvg(640, 480, cells(20), o);
  const mosaic = overlaySvg(6400, 4320, cells(100), o);
  assert.equal(font(mosaic), font(small), 'same cells, same label size');
  assert.ok(font(small) >= 9 && font(small) <= 16);
  assert.match(overlaySvg(640, 480, cells(2), { ...o, scores: false }), />RBC<\/text>/);
  assert.doesNotMatch(overlaySvg(640, 480, cells(2), { ...o, labels: false }), />RBC 0\.90/);
  // the legend lies in a strip below the picture, wrapping on a narrow one
  const legendY = (svg: string) => [...svg.matchAll(/<text x="[\d.]+" y="([\d.]+)"[^>]*>(RBC|WBC|Platelets): /g)].map((m) => Number(m[1]));
  assert.ok(legendY(small).every((y) => y > 480));
  assert.equal(new Set(legendY(small)).size, 1);
  assert.ok(new Set(legendY(overlaySvg(200, 480, cells(2), o))).size > 1);
});
