/** The committed default model: parity with torchvision, decoding of real smears, tiling. */
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import sharp from 'sharp';
import { iou } from '../src/core/metrics.js';
import { calibrateToFile, collect, loadModel, loadTruth } from '../src/index.js';
import { TILE_OVERLAP, TILE_SIZE, WHOLE_IMAGE_PIXELS } from '../src/detector.js';
import { planTiles } from '../src/core/tiling.js';
import { applyThresholds } from '../src/core/count.js';
import { parseVoc } from '../src/core/formats.js';
import { crop, detectPixels, type InputTensor } from '../src/core/pipeline.js';
import { detect } from '../src/core/detect.js';
import { decodeRgb } from '../src/adapters/image.js';
import { openOnnx } from '../src/adapters/onnx.js';
import { MODEL, SAMPLES, tmp } from './helpers.js';

const model = await loadModel(MODEL);

test('decoder reproduces torchvision post-processing on the parity fixture', async () => {
  const fx = JSON.parse(readFileSync(MODEL.replace(/\.onnx$/, '.parity.json'), 'utf8'));
  assert.equal(fx.model_sha256, model.info.sha256, 'fixture was exported from this model');
  assert.equal(fx.images.length, 3);
  for (const e of fx.images) {
    const d = await model.detect(join(SAMPLES, e.image), { scale: 1 });
    assert.equal(d.width, e.width);
    // the fixture's floor candidates may differ only where a score sits on the floor
    const near = (s: number) => Math.abs(s - fx.score_floor) < 1e-3;
    assert.ok(Math.abs(d.candidates.length - e.boxes.length) <= e.scores.filter(near).length, `${e.image}: ${d.candidates.length} vs ${e.boxes.length}`);
    let matched = 0;
    e.boxes.forEach((b: number[], i: number) => {
      const hit = d.candidates.find(
        (c) => c.label === e.labels[i] && Math.abs(c.score - e.scores[i]) < 1e-3 && c.box.every((v, k) => Math.abs(v - (b[k] ?? NaN)) < 0.5),
      );
      if (hit) matched++;
      else assert.ok(near(e.scores[i]), `${e.image}: torchvision detection ${i} (${e.labels[i]} ${e.scores[i]}) not reproduced`);
    });
    assert.ok(matched >= e.boxes.length - 2);
  }
});

test('finds the expert-labelled cells of a CBC smear (whose labels leave red cells out)', async () => {
  const r = await model.count(join(SAMPLES, 'BloodImage_00004.jpg'));
  const truth = parseVoc(readFileSync(join(SAMPLES, 'truth', 'BloodImage_00004.xml'), 'utf8')).boxes;
  const rbc = truth.filter((t) => t.label === 'RBC');
  assert.equal(r.counts.WBC, truth.filter((t) => t.label === 'WBC').length);
  // CBC boxes about half of the red cells: every boxed one should be found, and more counted
  const found = rbc.filter((t) => r.detections.some((d) => !d.uncertain && d.label === 'RBC' && iou(d.box, t.box) >= 0.5)).length;
  assert.ok(found >= 0.8 * rbc.length, `${found} of ${rbc.length} expert-boxed red cells found`);
  assert.ok(r.counts.RBC >= rbc.length, `RBC ${r.counts.RBC} vs ${rbc.length} boxed`);
  assert.ok(r.meanScore.WBC! > 0.5);
});

test('a count that looks only at scores above a floor gets exactly the candidates above it, and the same count', async () => {
  const key = (c: { label: string; score: number; box: number[] }) => `${c.label} ${c.score} ${c.box.join(' ')}`;
  // a native close-up and a field at half the magnification, which scale auto enlarges
  const file = join(SAMPLES, 'BloodImage_00011.jpg');
  const { data, info } = await sharp(file).resize(320, 240).raw().toBuffer({ resolveWithObject: true });
  const half = { data: new Uint8Array(data), width: info.width, height: info.height, channels: 3 as const };
  for (const [name, input] of [
    ['close-up', join(SAMPLES, '0aa766fb-87f4-5dba-86e7-299250bc2e25.jpg')],
    ['field at 0.5x', half],
  ] as const) {
    const all = await model.detect(input);
    // 0.5 lies above the scores scale auto measures from (0.4), so the floor stops there
    const minScore = model.metadata.scale?.min_score ?? 0.4;
    for (const floor of [0.3, 0.5]) {
      const some = await model.detect(input, { floor });
      const kept = Math.min(floor, minScore) - 1e-6;
      assert.ok(
        all.candidates.some((c) => c.score < kept),
        `${name}: the full set has weaker candidates`,
      );
      assert.deepEqual(some.candidates.map(key), all.candidates.filter((c) => c.score > kept).map(key), `${name}, floor ${floor}`);
      assert.equal(some.scale, all.scale, `${name}: the same magnification estimate`);
    }
    // Model.count applies it (its lowest review edge) and counts exactly as from every candidate
    for (const opts of [{}, { thresholds: 0.6, review: 0.5 }]) {
      const counted = await model.count(input, opts);
      const full = model.summarise(all, opts, counted.file);
      for (const k of ['counts', 'uncertain', 'meanScore', 'detections', 'scale'] as const) assert.deepEqual(counted[k], full[k], `${name}: ${k}`);
    }
  }
  assert.notEqual((await model.detect(half)).scale, 1, 'the half-size field was rescaled');
  await assert.rejects(model.detect(file, { floor: Number.NaN }), /floor must be a number from 0 to 1/);
});

test('a large smear is tiled and a cell across a tile seam is counted once', async () => {
  // a 2600x2300 canvas (above the whole-image limit) with a smear pasted so that a tile
  // seam runs through its white cell; the tiled count is compared with one network pass
  // over the same canvas
  const sample = join(SAMPLES, 'BloodImage_00004.jpg');
  const alone = await model.count(sample);
  const wbc = alone.detections.find((d) => d.label === 'WBC' && !d.uncertain)!;
  assert.ok(wbc, 'sample has a WBC');
  const W = 2600,
    H = 2300;
  assert.ok(W * H > WHOLE_IMAGE_PIXELS);
  const tiles = planTiles(W, H, TILE_SIZE, TILE_OVERLAP);
  const [firstTile] = tiles;
  assert.ok(firstTile);
  const seamX = firstTile.core[2];
  const left = Math.round(seamX - (wbc.box[0] + wbc.box[2]) / 2 + 5); // WBC centre 5 px left of the seam
  const top = 700;
  const canvas = await sharp({ create: { width: W, height: H, channels: 3, background: '#e9d9d6' } })
    .composite([{ input: sample, left, top }])
    .png()
    .toBuffer();
  const tiled = await model.count(canvas);
  assert.ok(tiled.tiles! > 1);
  const onnx = await openOnnx(MODEL);
  const px = await decodeRgb(canvas);
  const whole = applyThresholds(await detectPixels(onnx.run.bind(onnx), onnx.metadata, px), model.thresholds());
  const shifted = tiled.detections
    .filter((d) => !d.uncertain)
    .map((d) => ({ ...d, box: [d.box[0] - left, d.box[1] - top, d.box[2] - left, d.box[3] - top] as typeof d.box }));
  const wbcs = shifted.filter((d) => d.label === 'WBC' && iou(d.box, wbc.box) > 0.3);
  assert.equal(wbcs.length, 1, 'the white cell on the seam is counted exactly once');
  const [onSeam] = wbcs;
  assert.ok(onSeam);
  assert.ok(iou(onSeam.box, wbc.box) > 0.8);
  assert.ok(onSeam.box[0] < seamX - left && onSeam.box[2] > seamX - left, 'and it does straddle the seam');
  assert.equal(tiled.counts.WBC, whole.counts.WBC);
  for (const k of ['RBC', 'Platelets'] as const) {
    assert.ok(Math.abs(tiled.counts[k] - whole.counts[k]) <= 2, `${k}: tiled ${tiled.counts[k]} vs one pass ${whole.counts[k]}`);
  }
});

test('a dense smear larger than a field keeps every cell a field would: the caps before NMS grow with its area', async () => {
  // 4 x 4 copies of one field (2560 x 1920, read in tiles): the caps before NMS (candidates per
  // pyramid level, detections) must lose no cell there, i.e. counts with them equal counts with
  // caps twenty times larger, and the tiles must agree with one network pass. Caps per
  // megapixel, a third of a field's density, lost a red cell or two per copy (24 of 25).
  const sample = join(SAMPLES, 'BloodImage_00011.jpg');
  const copies = [];
  for (let y = 0; y < 4; y++) for (let x = 0; x < 4; x++) copies.push({ input: sample, left: x * 640, top: y * 480 });
  const grid = await sharp({ create: { width: 2560, height: 1920, channels: 3, background: '#fff' } })
    .composite(copies)
    .png()
    .toBuffer();
  const tiled = await model.count(grid, { scale: 1 });
  assert.ok(tiled.tiles! > 1);
  const onnx = await openOnnx(MODEL);
  const pixels = await decodeRgb(grid);
  const whole = applyThresholds(await detectPixels(onnx.run.bind(onnx), onnx.metadata, pixels), model.thresholds());
  const pp = onnx.metadata.postprocess;
  const roomy = { ...onnx.metadata, postprocess: { ...pp, topk_per_level: 20 * pp.topk_per_level, max_detections: 20 * pp.max_detections } };
  const uncapped = applyThresholds(await detectPixels(onnx.run.bind(onnx), roomy, pixels), model.thresholds());
  await onnx.release();
  assert.deepEqual(whole.counts, uncapped.counts);
  assert.ok(whole.counts.RBC >= 16 * 20, `${whole.counts.RBC} red cells in 16 fields`);
  for (const k of ['RBC', 'WBC', 'Platelets'] as const) {
    assert.ok(Math.abs(tiled.counts[k] - whole.counts[k]) <= 0.005 * whole.counts[k], `${k}: tiled ${tiled.counts[k]} vs one pass ${whole.counts[k]}`);
  }
});

test('scale auto: a smear photographed at half or twice the magnification is rescaled and counted like the original', async () => {
  const file = join(SAMPLES, 'BloodImage_00004.jpg');
  const ref = await model.count(file, { scale: 1 });
  assert.equal(ref.scale, 1);
  assert.equal((await model.count(file)).scale, 1, 'a smear at the training scale is left alone');
  for (const s of [0.5, 2]) {
    const { data, info } = await sharp(file)
      .resize(Math.round(640 * s), Math.round(480 * s))
      .raw()
      .toBuffer({ resolveWithObject: true });
    const img = { data: new Uint8Array(data), width: info.width, height: info.height, channels: 3 as const };
    const auto = await model.count(img, { scale: 'auto' });
    const off = await model.count(img, { scale: 1 });
    // brought back to within about 10 % of the original (refining with the model's typical
    // response alone stopped 17 % above it at 2x)
    assert.ok(auto.scale! * s >= 0.9 && auto.scale! * s <= 1.12, `${s}x: scale ${auto.scale}, ${auto.scale! * s}x the original`);
    assert.equal(auto.counts.WBC, ref.counts.WBC, `${s}x: WBC`);
    // red cells: within 20 % of the original, or at least as close as without rescaling (at 0.5x
    // the model alone misses most cells; at 2x its scale jitter copes, and one image is noisy)
    assert.ok(
      Math.abs(auto.counts.RBC - ref.counts.RBC) <= Math.max(Math.abs(off.counts.RBC - ref.counts.RBC), 0.2 * ref.counts.RBC),
      `${s}x: RBC ${auto.counts.RBC} (off ${off.counts.RBC}, 1x ${ref.counts.RBC})`,
    );
    // boxes stay in the pixels of the image given
    for (const d of auto.detections) assert.ok(d.box[2] <= info.width + 1e-6 && d.box[3] <= info.height + 1e-6);
    const wbc = auto.detections.find((d) => d.label === 'WBC' && !d.uncertain)!;
    const wbcRef = ref.detections.find((d) => d.label === 'WBC' && !d.uncertain)!;
    assert.ok(iou(wbc.box, wbcRef.box.map((v) => v * s) as typeof wbc.box) > 0.7, `${s}x: WBC box`);
  }
});

test('scale auto measures no factor twice, and keeps the pass whose cells measured nearest the reference', async () => {
  const onnx = await openOnnx(MODEL);
  const passes = async (s: number) => {
    const { data, info } = await sharp(join(SAMPLES, 'BloodImage_00017.jpg'))
      .resize(Math.round(640 * s), Math.round(480 * s))
      .removeAlpha()
      .raw()
      .toBuffer({ resolveWithObject: true });
    const img = { data: new Uint8Array(data), width: info.width, height: info.height, channels: 3 };
    const sizes: string[] = [];
    const run = (x: InputTensor) => {
      sizes.push(`${x.width}x${x.height}`);
      return onnx.run(x);
    };
    const src = { width: img.width, height: img.height, read: async (l: number, t: number, w: number, h: number) => crop(img, l, t, w, h) };
    return { det: await detect(run, onnx.metadata, src, { scale: 'auto' }), sizes };
  };
  // cells at a quarter of their size: the factor stops at its limit, 4, measured once
  const small = await passes(0.24);
  assert.equal(small.det.scale, 4);
  assert.ok(small.sizes.length <= 3, `passes ${small.sizes.join(' ')}`); // it used to measure 4 again, twice
  // 3.5 times the size: the measurements are noisy (a step once went to 2.1x the original). At
  // 4x the fourth release reads this field's 400 px cells as 134 px ones, inside the band, and
  // leaves it unscaled (two other samples at 4x are scaled).
  const big = await passes(3.5);
  assert.ok(big.det.scale * 3.5 >= 0.8 && big.det.scale * 3.5 <= 1.35, `3.5x: scale ${big.det.scale}`);
  assert.ok(big.sizes.length <= 6);
  await onnx.release();
});

test('scale auto measures a large image at low magnification on a central region, not the whole image again and again', async () => {
  // 5 x 5 copies of a field at half its size (1600 x 1200, cells about 48 px): about 2x is needed
  const onnx = await openOnnx(MODEL);
  const half = await sharp(join(SAMPLES, 'BloodImage_00011.jpg')).resize(320, 240).png().toBuffer();
  const copies = [];
  for (let y = 0; y < 5; y++) for (let x = 0; x < 5; x++) copies.push({ input: half, left: x * 320, top: y * 240 });
  const { data, info } = await sharp({ create: { width: 1600, height: 1200, channels: 3, background: '#fff' } })
    .composite(copies)
    .removeAlpha()
    .raw()
    .toBuffer({ resolveWithObject: true });
  const img = { data: new Uint8Array(data), width: info.width, height: info.height, channels: 3 };
  const src = { width: img.width, height: img.height, read: async (l: number, t: number, w: number, h: number) => crop(img, l, t, w, h) };
  const pixels = async (scale: 'auto' | number) => {
    let px = 0;
    const run = (x: InputTensor) => {
      px += x.height * x.width;
      return onnx.run(x);
    };
    return { det: await detect(run, onnx.metadata, src, { scale }), px };
  };
  const auto = await pixels('auto');
  assert.ok(auto.det.scale >= 1.7 && auto.det.scale <= 2.3, `scale ${auto.det.scale}`);
  const final = await pixels(auto.det.scale);
  // the first pass (the whole image, padded to 1664 x 1280), refinements of at most 1536 x 1536, the final pass
  assert.ok(auto.px <= 1664 * 1280 + 4 * 1536 * 1536 + final.px, `${auto.px} network pixels; the final pass alone ${final.px}`);
  assert.equal(auto.det.candidates.length, final.det.candidates.length);
  await onnx.release();
});

test('scale auto finds cells far below the training size (a field at 0.2x), and a blank image costs one pass', async () => {
  const file = join(SAMPLES, 'BloodImage_00011.jpg');
  const ref = await model.count(file, { scale: 1 });
  const { data, info } = await sharp(file).resize(128, 96).raw().toBuffer({ resolveWithObject: true });
  const tiny = { data: new Uint8Array(data), width: info.width, height: info.height, channels: 3 as const };
  assert.ok((await model.count(tiny, { scale: 1 })).counts.RBC <= 2, 'at 1x the 19 px cells are missed');
  const auto = await model.count(tiny);
  assert.equal(auto.scale, 4);
  assert.ok(Math.abs(auto.counts.RBC - ref.counts.RBC) <= 0.2 * ref.counts.RBC, `RBC ${auto.counts.RBC} against ${ref.counts.RBC}`);
  assert.equal(auto.counts.WBC, ref.counts.WBC);
  const onnx = await openOnnx(MODEL);
  let runs = 0;
  const blank = { data: new Uint8Array(640 * 480 * 3).fill(235), width: 640, height: 480, channels: 3 };
  const src = { width: 640, height: 480, read: async (l: number, t: number, w: number, h: number) => crop(blank, l, t, w, h) };
  const det = await detect(
    (x) => {
      runs++;
      return onnx.run(x);
    },
    onnx.metadata,
    src,
    {},
  );
  assert.deepEqual([det.scale, runs], [1, 1]);
  await onnx.release();
});

test('black is no cell: a black field counts nothing, and a black margin around a smear changes no white-cell count', async () => {
  // the network never saw unlit pixels: before they became padding, a black field was a white
  // cell at 0.94 and a margin like a slide scanner's five more, hiding the red cells beside it
  const black = { data: new Uint8Array(640 * 480 * 3), width: 640, height: 480, channels: 3 as const };
  const none = await model.count(black);
  assert.deepEqual(none.counts, { RBC: 0, WBC: 0, Platelets: 0 });
  const file = join(SAMPLES, 'BloodImage_00004.jpg');
  const plain = await model.count(file);
  const framed = await model.count(await sharp(file).extend({ top: 200, bottom: 200, left: 300, right: 300, background: '#000' }).png().toBuffer());
  assert.equal(framed.counts.WBC, plain.counts.WBC);
  assert.equal(framed.counts.Platelets, plain.counts.Platelets);
  assert.ok(Math.abs(framed.counts.RBC - plain.counts.RBC) <= 0.2 * plain.counts.RBC, `RBC ${framed.counts.RBC} against ${plain.counts.RBC}`);
  // a cell cut by the smear's edge may have its box reach past it (as past an image's edge); none lies in the margin alone
  const inSmear = ([x0, y0, x1, y1]: number[]) => Math.min(x1!, 940) - Math.max(x0!, 300) >= 4 && Math.min(y1!, 680) - Math.max(y0!, 200) >= 4;
  for (const d of framed.detections) assert.ok(inSmear(d.box), `a cell in the margin: ${d.box}`);
});

test('test-time augmentation (flips) finds the same cells, in the same place', async () => {
  const file = join(SAMPLES, 'BloodImage_00011.jpg');
  const plain = await model.count(file, { scale: 1 });
  const tta = await model.count(file, { scale: 1, tta: true });
  // the result says how it was made
  assert.deepEqual([tta.tta, plain.tta], [true, undefined]);
  assert.equal(tta.counts.WBC, plain.counts.WBC);
  assert.ok(Math.abs(tta.counts.RBC - plain.counts.RBC) <= 3, `${tta.counts.RBC} vs ${plain.counts.RBC}`);
  const w = (r: typeof plain) => r.detections.find((d) => d.label === 'WBC')!.box;
  assert.ok(iou(w(tta), w(plain)) > 0.9);
});

test('library arguments are checked sharp-style: the argument and the bad value are named', async () => {
  const file = join(SAMPLES, 'BloodImage_00004.jpg');
  await assert.rejects(
    model.count(file, { thresholds: 7 }),
    (e: Error) => e instanceof RangeError && /thresholds must be a number from 0 to 1, not 7/.test(e.message),
  );
  await assert.rejects(model.count(file, { thresholds: NaN }), RangeError);
  await assert.rejects(model.count(file, { thresholds: { Foo: 0.3 } as never }), (e: Error) => e instanceof TypeError && /unknown class 'Foo'/.test(e.message));
  await assert.rejects(model.count(file, { review: { RBC: -1 } }), /review\.RBC must be a number from 0 to 1/);
  await assert.rejects(model.count({ data: new Uint8Array(10), width: 4, height: 4, channels: 3 }), /raw image data has 10 bytes; 4 x 4 x 3 needs 48/);
  await assert.rejects(model.count(42 as never), TypeError);
  await assert.rejects(model.count(file, { scale: 9 }), /scale must be 'auto' or a number from 0.25 to 4/);
  await assert.rejects(loadModel(MODEL, { threads: -2 }), /threads must be a whole number >= 1, not -2/);
  // a number in a string is named as a string, not read as a value out of range
  await assert.rejects(model.count(file, { thresholds: { RBC: '0.4' as never } }), /thresholds\.RBC must be a number from 0 to 1, not '0\.4' \(a string\)/);
  await assert.rejects(
    model.count(file, { tta: 'yes' as never }),
    (e: Error) => e instanceof TypeError && /tta must be true or false, not 'yes'/.test(e.message),
  );
  await assert.rejects(model.count(file, { whiteBalance: 'on' as never }), /whiteBalance must be true or false, not 'on'/);
  await assert.rejects(model.count(new Uint8Array(0)), /image bytes are empty/);
  await assert.rejects(model.count(file, { maxPixels: 1000 }), /640 x 480 is 0\.31 megapixels, above the limit of 0\.001 \(maxPixels; --max-megapixels/);
  assert.throws(() => model.summarise(undefined as never), /summarise needs what detect\(\) returned/);
});

test('calibrateToFile writes a new model, and never replaces a file hemocount did not write', async () => {
  const dir = tmp();
  const truth = await loadTruth(SAMPLES);
  const { images } = await collect(model, truth);
  const mine = join(dir, 'mine.onnx');
  writeFileSync(mine, 'a file of my own');
  await assert.rejects(calibrateToFile(model, images, { out: mine, data: 'samples', minCells: 1 }), /exists and was not written by hemocount.*overwrite: true/);
  assert.equal(readFileSync(mine, 'utf8'), 'a file of my own');
  await assert.rejects(
    calibrateToFile(model, images, { out: join(dir, 'x.onnx'), data: 'samples', minCells: 1, criterion: 'bogus' as never }),
    /criterion must be 'f1' or 'accuracy'/,
  );
  const out = join(dir, 'lab.onnx');
  for (let k = 0; k < 2; k++) await calibrateToFile(model, images, { out, data: 'samples', minCells: 1 }); // its own file may be replaced
  assert.equal((await loadModel(out)).metadata.calibration !== undefined, true);
  await calibrateToFile(model, images, { out: mine, data: 'samples', minCells: 1, overwrite: true });
  assert.notEqual(readFileSync(mine, 'utf8'), 'a file of my own');
});

test('the bundled int8 model is the default, carries the same metadata, is smaller, and finds the same cells as fp32 on the samples', async () => {
  const q = await loadModel('int8');
  assert.equal((await loadModel()).info.sha256, q.info.sha256);
  assert.equal((await loadModel('fp32')).info.sha256, model.info.sha256);
  // the same metadata but the name, which says which of the two ran, and the input: the
  // 8-bit image itself (NHWC), its normalisation folded into the first convolution
  assert.equal(q.metadata.name, `${model.metadata.name}-int8`);
  const { layout, dtype, normalisation, ...qInput } = q.metadata.input as typeof q.metadata.input & { normalisation?: string };
  assert.deepEqual([layout, dtype, normalisation], ['NHWC', 'uint8', 'folded into the first convolution']);
  assert.equal(q.metadata.format, 'hemocount-retinanet/3');
  assert.deepEqual({ ...q.metadata, name: model.metadata.name, format: model.metadata.format, input: { ...qInput, layout: 'NCHW' } }, model.metadata);
  assert.ok(readFileSync(q.path).length < readFileSync(MODEL).length / 2.5);
  let matched = 0;
  let total = 0;
  for (const f of ['BloodImage_00004.jpg', 'BloodImage_00011.jpg', 'BloodImage_00017.jpg', '0aa766fb-87f4-5dba-86e7-299250bc2e25.jpg']) {
    const [a, b] = [await model.count(join(SAMPLES, f)), await q.count(join(SAMPLES, f))];
    for (const c of ['RBC', 'WBC', 'Platelets'] as const)
      assert.ok(Math.abs(a.counts[c] - b.counts[c]) <= Math.max(1, 0.1 * a.counts[c]), `${f} ${c}: ${a.counts[c]} vs ${b.counts[c]}`);
    // every confident fp32 cell has an int8 box of the same class on it
    for (const d of a.detections.filter((x) => x.score > 0.7)) {
      total++;
      if (b.detections.some((e) => e.label === d.label && iou(e.box, d.box) > 0.7)) matched++;
    }
  }
  assert.ok(matched / total > 0.97, `${matched}/${total}`);
});

test('white balance: a field under a warm lamp is brought back to grey, the gains reported; asked off, nothing changes', async () => {
  const file = join(SAMPLES, 'BloodImage_00011.jpg');
  const { data, info } = await sharp(file).raw().toBuffer({ resolveWithObject: true });
  // the lamp's colour, not white-balanced: red up 8 %, blue down 20 %
  const warm = new Uint8Array(data.length);
  for (let i = 0; i < data.length; i += 3) {
    warm[i] = Math.min(255, Math.round(data[i]! * 1.08));
    warm[i + 1] = data[i + 1]!;
    warm[i + 2] = Math.round(data[i + 2]! * 0.8);
  }
  const img = { data: warm, width: info.width, height: info.height, channels: 3 as const };
  const plain = await model.count(file, { whiteBalance: true });
  const balanced = await model.count(img, { whiteBalance: true });
  const [r, g, b] = balanced.whiteBalance!;
  // the gains undo the cast (relative to green: the brightness they keep is the cast field's own)
  const [pr, pg, pb] = plain.whiteBalance!;
  assert.ok(Math.abs((r * 1.08) / g - pr / pg) < 0.02 && Math.abs((b * 0.8) / g - pb / pg) < 0.02, `${balanced.whiteBalance} against ${plain.whiteBalance}`);
  for (const c of ['RBC', 'WBC', 'Platelets'] as const) assert.ok(Math.abs(balanced.counts[c] - plain.counts[c]) <= 1, `${c}`);
  const off = await model.count(img, { whiteBalance: false });
  assert.equal(off.whiteBalance, undefined);
});
