/** Decoding through sharp: orientation, grey / 16-bit / alpha inputs, bad files, the annotated picture. */
import assert from 'node:assert/strict';
import { mkdirSync, readdirSync, readFileSync, readlinkSync, writeFileSync } from 'node:fs';
import { statfs } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import sharp from 'sharp';
import { decodeRgb, drawAnnotated, headerPixels, probe, readRegion, regions, sniffImageType } from '../src/adapters/image.js';
import { annotationLayout, legendLayout } from '../src/core/raster.js';
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
  // a count reads the file once and takes its size from the decoded, upright pixels
  const model = await loadModel(MODEL);
  const [tagged, upright] = [await model.count(f), await model.count(a)];
  assert.deepEqual([tagged.width, tagged.height], [640, 480]);
  assert.deepEqual(tagged.detections, upright.detections);
});

/** Files this process reads through an open handle after they were removed, under `folder`. */
const openCopies = (folder: string) =>
  readdirSync('/proc/self/fd')
    .map((fd) => {
      try {
        return readlinkSync(`/proc/self/fd/${fd}`);
      } catch {
        return '';
      }
    })
    .filter((p) => p.startsWith(folder) && p.endsWith('(deleted)')).length; // Linux's name for such a file

test('a huge image is decoded once: its regions are the pixels a region decode gives, and no copy stays on disk', async () => {
  const dir = tmp();
  const tagged = join(dir, 'tagged.jpg'); // the regions must be upright and flattened as every read is
  await sharp(SAMPLE).rotate(270).withMetadata({ orientation: 6 }).jpeg().toFile(tagged);
  const alpha = join(dir, 'alpha.png');
  await sharp(SAMPLE).ensureAlpha(0.5).png().toFile(alpha);
  const boxes = [
    [0, 0, 640, 480],
    [0, 100, 640, 120], // a strip
    [123, 45, 200, 150], // inside
    [600, 440, 40, 40], // the corner
  ] as const;
  const same = async (r: ReturnType<typeof regions>, file: string) => {
    for (const [l, t, w, h] of boxes) {
      const [got, want] = [await r.read(l, t, w, h), await readRegion(file, l, t, w, h)];
      assert.deepEqual([got.width, got.height, got.channels], [want.width, want.height, 3]);
      assert.ok(Buffer.from(got.data).equals(Buffer.from(want.data)), `${file} ${[l, t, w, h]}`);
    }
  };
  const scratch = join(dir, 'scratch');
  mkdirSync(scratch);
  // a RAM-backed temporary folder is not used for the copy (the copy would be memory)
  const onDisk = (await statfs(scratch)).type !== 0x01021994;
  // the leftover of a process killed while writing its copy is swept away; a live process's is not
  const dead = join(scratch, 'hemocount-v999999999-x');
  const live = join(scratch, `hemocount-v${process.ppid}-x`);
  for (const d of [dead, live]) {
    mkdirSync(d);
    writeFileSync(join(d, 'pixels.v'), 'partial');
  }
  const saved = process.env.TMPDIR;
  try {
    process.env.TMPDIR = scratch;
    for (const file of [tagged, alpha]) {
      const r = regions(file, 640, 480);
      await same(r, file);
      assert.equal(openCopies(scratch), onDisk ? 1 : 0, 'the regions come from the decoded copy');
      assert.deepEqual(
        readdirSync(scratch),
        onDisk ? ['hemocount-v' + process.ppid + '-x'] : [dead, live].map((d) => d.split('/').pop()),
        'the copy is unlinked once open',
      );
      // one copy at a time per thread: a second image in flight is decoded region by region
      const other = regions(tagged, 640, 480);
      await same(other, tagged);
      assert.equal(openCopies(scratch), onDisk ? 1 : 0);
      await other.close();
      await r.close();
      assert.equal(openCopies(scratch), 0, 'closed');
    }
    process.env.TMPDIR = join(dir, 'missing'); // no temporary folder: each region decoded as before
    const r = regions(tagged, 640, 480);
    await same(r, tagged);
    await r.close();
  } finally {
    if (saved === undefined) delete process.env.TMPDIR;
    else process.env.TMPDIR = saved;
  }
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

test("a JPEG's or PNG's pixel count is read from its header as libvips reads it; other formats and damaged headers give null", async () => {
  const dir = tmp();
  const cases: [string, Buffer][] = [
    ['baseline JPEG', readFileSync(SAMPLE)],
    [
      'progressive JPEG, EXIF rotated',
      await sharp(SAMPLE).resize(321, 123).rotate(270).withMetadata({ orientation: 6 }).jpeg({ progressive: true }).toBuffer(),
    ],
    ['grey PNG', await sharp(SAMPLE).resize(77, 1301).greyscale().png().toBuffer()],
    ['16-bit PNG with alpha', await sharp(SAMPLE).ensureAlpha(0.5).toColourspace('rgb16').png().toBuffer()],
  ];
  for (const [name, bytes] of cases) {
    const m = await sharp(bytes).metadata();
    assert.equal(headerPixels(bytes), m.width! * m.height!, name);
  }
  writeFileSync(join(dir, 'x.webp'), await sharp(SAMPLE).webp().toBuffer());
  assert.equal(headerPixels(readFileSync(join(dir, 'x.webp'))), null, 'WebP: asked of libvips');
  const jpg = readFileSync(SAMPLE);
  assert.equal(headerPixels(jpg.subarray(0, 30)), null, 'cut before the frame header');
  const broken = Buffer.from(jpg);
  broken[2] = 0x00; // no marker where one must be
  assert.equal(headerPixels(broken), null);
  assert.equal(headerPixels(new TextEncoder().encode('hello world')), null);
});

test('bad files give errors that name the file and the problem', async () => {
  const dir = tmp();
  const bad = join(dir, 'half.jpg');
  const jpg = readFileSync(SAMPLE);
  writeFileSync(bad, jpg.subarray(0, 4000));
  await assert.rejects(decodeRgb(bad), /half\.jpg: corrupt or truncated image/);
  const png = await sharp(SAMPLE).png().toBuffer(); // a cut PNG says so too, not just its decoder's words
  writeFileSync(join(dir, 'half.png'), png.subarray(0, png.length >> 1));
  await assert.rejects(decodeRgb(join(dir, 'half.png')), /half\.png: corrupt or truncated image/);
  writeFileSync(join(dir, 'text.png'), 'not a png');
  await assert.rejects(decodeRgb(join(dir, 'text.png')), /text\.png: not an image/);
  await assert.rejects(decodeRgb(join(dir, 'missing.jpg')), /missing\.jpg: /);
  // a count reads a small file into memory first: the same reasons, with the file's name
  const model = await loadModel(MODEL);
  writeFileSync(join(dir, 'empty.jpg'), '');
  await assert.rejects(model.count(join(dir, 'empty.jpg')), /empty\.jpg: empty file \(0 bytes\)/);
  await assert.rejects(model.count(bad), /half\.jpg: corrupt or truncated image/);
  await assert.rejects(model.count(join(dir, 'half.png')), /half\.png: corrupt or truncated image/);
  await assert.rejects(model.count(join(dir, 'text.png')), /text\.png: not an image/);
  await assert.rejects(model.count(join(dir, 'missing.jpg')), /missing\.jpg: no such file/);
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

const PAPER = {
  classes: [
    { name: 'RBC', colour: '#ff8c00' },
    { name: 'WBC', colour: '#66ccff' },
    { name: 'Platelets', colour: '#1f3fbf' },
  ],
} as unknown as ModelMetadata;
const colours = Object.fromEntries(PAPER.classes.map((c) => [c.name, c.colour]));
const none = { RBC: 0, WBC: 0, Platelets: 0 };

test('box labels are sized by the cells, not the picture: a big mosaic keeps legible, small labels', () => {
  const cells = (n: number): Detection[] =>
    Array.from({ length: n }, (_, i) => ({
      label: 'RBC',
      score: 0.9,
      uncertain: false,
      box: [(i % 10) * 100, Math.floor(i / 10) * 100, (i % 10) * 100 + 96, Math.floor(i / 10) * 100 + 96],
    }));
  const small = annotationLayout(640, 480, cells(20), { colours });
  const mosaic = annotationLayout(6400, 4320, cells(100), { colours });
  assert.equal(mosaic.fontSize, small.fontSize, 'same cells, same label size');
  assert.equal(mosaic.boxes[0]!.label!.height, small.boxes[0]!.label!.height);
  assert.ok(small.fontSize >= 9 && small.fontSize <= 16);
  assert.deepEqual(
    small.boxes.map((b) => b.label?.text),
    cells(20).map(() => 'RBC 0.90'),
  );
  assert.deepEqual(
    annotationLayout(640, 480, cells(2), { colours, scores: false }).boxes.map((b) => b.label?.text),
    ['RBC', 'RBC'],
  );
  assert.ok(annotationLayout(640, 480, cells(2), { colours, labels: false }).boxes.every((b) => b.label === null));
  // the legend lies in a strip below the picture, wrapping on a narrow one
  const counts = { RBC: 1, WBC: 0, Platelets: 0 };
  const wide = legendLayout(640, 480, counts, none, colours);
  assert.ok(wide.entries.every((e) => e.y > 480));
  assert.equal(wide.rows, 1);
  assert.equal(new Set(wide.entries.map((e) => e.y)).size, 1);
  const narrow = legendLayout(200, 480, counts, none, colours);
  assert.ok(narrow.rows > 1 && new Set(narrow.entries.map((e) => e.y)).size > 1);
  assert.ok(narrow.height > wide.height);
});

test("labels, boxes and legend are drawn into the pixels; the caller's pixels are left alone", async () => {
  const width = 320;
  const height = 240;
  const white = new Uint8Array(width * height * 3).fill(255);
  const raw = { data: white, width, height, channels: 3 as const };
  const dets: Detection[] = [{ label: 'RBC', score: 0.9, uncertain: false, box: [100, 100, 196, 196] }];
  const draw = async (o: { labels?: boolean; scores?: boolean }) => {
    const png = await drawAnnotated(raw, dets, { meta: PAPER, counts: { RBC: 1, WBC: 0, Platelets: 0 }, uncertain: none, ...o });
    const { data, info } = await sharp(png).raw().toBuffer({ resolveWithObject: true });
    const at = (x: number, y: number) => [...data.subarray((y * info.width + x) * info.channels, (y * info.width + x) * info.channels + 3)];
    // the label's text: dark pixels (black on orange) in the band above the box
    let dark = 0;
    let right = 0;
    for (let y = 80; y < 100; y++)
      for (let x = 100; x < 200; x++)
        if (at(x, y).every((v) => v < 100)) {
          dark++;
          right = Math.max(right, x);
        }
    return { info, at, dark, right };
  };
  const full = await draw({});
  assert.ok(
    white.every((v) => v === 255),
    'the input pixels are not drawn on',
  );
  assert.equal(full.info.width, width);
  assert.ok(full.info.height > height, 'a legend strip below the picture');
  assert.deepEqual(full.at(100, 150), [0xff, 0x8c, 0x00], 'the box frame in the class colour');
  assert.ok(full.dark > 30, `label text drawn (${full.dark} dark pixels)`);
  // the label background: orange at 0.75 over white
  const fs = annotationLayout(width, height, dets, { colours }).fontSize;
  const [r, g, b] = full.at(101, 100 - fs);
  assert.ok(Math.abs(r! - 255) < 4 && Math.abs(g! - 169) < 4 && Math.abs(b! - 64) < 4, `label background ${[r, g, b]}`);
  const bare = await draw({ scores: false });
  assert.ok(bare.dark > 10 && bare.right < full.right - 10, 'no score: a shorter label');
  const unlabelled = await draw({ labels: false });
  assert.equal(unlabelled.dark, 0, 'no labels');
  assert.deepEqual(unlabelled.at(101, 100 - fs), [255, 255, 255]);
  // the legend's colour square, in the strip
  let orange = 0;
  for (let y = height; y < full.info.height; y++)
    for (let x = 0; x < 40; x++) {
      const [rr, gg, bb] = full.at(x, y);
      if (rr! > 240 && Math.abs(gg! - 0x8c) < 10 && bb! < 20) orange++;
    }
  assert.ok(orange > 50, `legend colour square (${orange} px)`);
});
