import assert from 'node:assert/strict';
import { test } from 'node:test';
import { applyThresholds, parseThresholds } from '../../src/core/count.js';
import { baseAnchors, classwiseNms, decodeDetections, levelGrids, nms, topAbove } from '../../src/core/decode.js';
import { estimateScale, flipPixels, mergePasses, parseScale, resizePixels } from '../../src/core/detect.js';
import { applyGains, backgroundColour, DARK_LEVEL, toTensor, whiteBalanceGains } from '../../src/core/pipeline.js';
import { mergeTiles, ownedByTile, planTiles } from '../../src/core/tiling.js';
import type { Candidate, ModelMetadata } from '../../src/core/types.js';

test('base anchors follow torchvision: ratio outer, size inner, rounded, centred', () => {
  const a = baseAnchors({ name: 'P3', stride: 8, sizes: [32, 64], aspect_ratios: [0.5, 1, 2] });
  assert.equal(a.length, 6 * 4);
  // aspect 1, size 32: a square of 32 centred on 0
  assert.deepEqual([...a.slice(8, 12)], [-16, -16, 16, 16]);
  // aspect 0.5 (h/w), size 32: w = 32/sqrt(.5) = 45.25 -> [-23, -11, 23, 11] after rounding
  assert.deepEqual([...a.slice(0, 4)], [-23, -11, 23, 11]);
});

test('level grids: exact strides on padded input, offsets accumulate', () => {
  const meta = {
    anchors: { levels: [8, 16, 32, 64, 128].map((s) => ({ name: `P`, stride: s, sizes: [1, 2, 3], aspect_ratios: [1, 2, 3] })) },
  } as unknown as ModelMetadata;
  const g = levelGrids(meta, 512, 640);
  assert.deepEqual(
    g.map((x) => [x.height, x.width]),
    [
      [64, 80],
      [32, 40],
      [16, 20],
      [8, 10],
      [4, 5],
    ],
  );
  assert.equal(g[1]?.offset, 64 * 80 * 9);
  assert.equal(g[4]?.offset, (64 * 80 + 32 * 40 + 16 * 20 + 8 * 10) * 9);
});

test('NMS keeps the best of overlapping boxes and distinct cells', () => {
  const boxes: [number, number, number, number][] = [
    [0, 0, 10, 10],
    [1, 1, 11, 11],
    [20, 20, 30, 30],
    [0, 0, 10, 10.5],
  ];
  assert.deepEqual(nms(boxes, [0.9, 0.8, 0.7, 0.95], 0.5), [3, 2]);
  // IoU exactly at the threshold is kept (torchvision suppresses only IoU > threshold)
  assert.deepEqual(
    nms(
      [
        [0, 0, 10, 10],
        [5, 0, 15, 10],
      ],
      [0.9, 0.8],
      1 / 3,
    ).length,
    2,
  );
});

test('grid NMS keeps exactly what the pairwise greedy loop keeps, boxes of any size', () => {
  // the textbook loop: every kept box suppresses every later box it overlaps too much
  const pairwise = (boxes: [number, number, number, number][], scores: number[], t: number) => {
    const order = scores.map((_, i) => i).sort((a, b) => scores[b]! - scores[a]! || a - b);
    const gone = new Set<number>();
    const keep: number[] = [];
    for (const [k, i] of order.entries()) {
      if (gone.has(i)) continue;
      keep.push(i);
      const a = boxes[i]!;
      for (const j of order.slice(k + 1)) {
        const b = boxes[j]!;
        const iw = Math.min(a[2], b[2]) - Math.max(a[0], b[0]);
        const ih = Math.min(a[3], b[3]) - Math.max(a[1], b[1]);
        if (iw <= 0 || ih <= 0) continue;
        const inter = iw * ih;
        if (inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter) > t) gone.add(j);
      }
    }
    return keep;
  };
  let seed = 7;
  const rnd = () => {
    seed = (seed * 16807) % 2147483647; // Park-Miller: exact in doubles
    return seed / 2147483647;
  };
  for (let trial = 0; trial < 20; trial++) {
    // crowded cells of 20-120 px, a few huge boxes, and near-duplicates
    const boxes: [number, number, number, number][] = [];
    for (let i = 0; i < 400; i++) {
      const s = i % 50 === 0 ? 400 + rnd() * 600 : 20 + rnd() * 100;
      const x = rnd() * 1500;
      const y = rnd() * 1000;
      boxes.push([x, y, x + s * (0.7 + rnd() * 0.6), y + s]);
      if (i % 3 === 0) boxes.push([x + rnd() * 10, y + rnd() * 10, x + s, y + s * 1.1]);
    }
    const scores = boxes.map(() => Math.round(rnd() * 100) / 100); // ties on purpose
    // as given (merged scores: sorted by a comparator) and as the network's float32 values (sorted as keys)
    for (const sc of [scores, scores.map(Math.fround)]) for (const t of [0.3, 0.5]) assert.deepEqual(nms(boxes, sc, t), pairwise(boxes, sc, t));
  }
  // -0 and 0 are equal scores, ordered by index; a negative score sorts last
  const row: [number, number, number, number][] = [0, 1, 2, 3].map((i) => [i * 100, 0, i * 100 + 50, 50]);
  assert.deepEqual(nms(row, [0.5, -0, 0, 0.5], 0.5), [0, 3, 1, 2]);
  assert.deepEqual(nms(row, [0.5, -0, 0, -1], 0.5), [0, 1, 2, 3]);
  // a box with NaN or infinite sides (only a broken network output gives one) overlaps nothing,
  // whatever share of the boxes it is, and never stalls the grid
  const odd: [number, number, number, number][] = [
    [2, 3, 11, 15],
    [11, 15, Number.NaN, 27],
    [1, 4, 16, 13],
    [15, 7, Number.NaN, 22],
    [0, 0, Number.POSITIVE_INFINITY, 9],
  ];
  const sc = [2 / 3, 0, 2 / 3, 1 / 3, 0.9];
  assert.deepEqual(nms(odd, sc, 0.3), pairwise(odd, sc, 0.3));
  assert.deepEqual(nms(odd, sc, 0.3), [4, 0, 3, 1]);
});

test('class-wise NMS never lets one class suppress another', () => {
  const c: Candidate[] = [
    { label: 'RBC', score: 0.9, box: [0, 0, 10, 10] },
    { label: 'WBC', score: 0.8, box: [0, 0, 10, 10] },
    { label: 'RBC', score: 0.7, box: [0, 0, 10, 10] },
  ];
  const kept = classwiseNms(c, 0.5);
  assert.deepEqual(
    kept.map((k) => k.label),
    ['RBC', 'WBC'],
  );
});

test('per-class thresholds and the review band', () => {
  const cands: Candidate[] = [
    { label: 'RBC', score: 0.3, box: [0, 0, 1, 1] },
    { label: 'RBC', score: 0.2, box: [0, 0, 1, 1] },
    { label: 'RBC', score: 0.05, box: [0, 0, 1, 1] },
    { label: 'WBC', score: 0.6, box: [0, 0, 1, 1] },
    { label: 'WBC', score: 0.7, box: [0, 0, 1, 1] },
  ];
  const s = applyThresholds(cands, { count: { RBC: 0.25, WBC: 0.65, Platelets: 0.35 }, review: { RBC: 0.1, WBC: 0.5, Platelets: 0.2 } });
  assert.deepEqual(s.counts, { RBC: 1, WBC: 1, Platelets: 0 });
  assert.deepEqual(s.uncertain, { RBC: 1, WBC: 1, Platelets: 0 });
  assert.equal(s.meanScore.RBC, 0.3);
  assert.equal(s.meanScore.Platelets, null);
  assert.equal(s.detections.filter((d) => d.uncertain).length, 2);
});

test('threshold specs', () => {
  const base = { RBC: 0.25, WBC: 0.65, Platelets: 0.35 };
  assert.deepEqual(parseThresholds('0.4', base), { RBC: 0.4, WBC: 0.4, Platelets: 0.4 });
  assert.deepEqual(parseThresholds('wbc=0.5,PLT=0.3', base), { RBC: 0.25, WBC: 0.5, Platelets: 0.3 });
  assert.throws(() => parseThresholds('RBC=2', base), /between 0 and 1/);
  assert.throws(() => parseThresholds('XYZ=0.2', base), /bad threshold/);
  assert.throws(() => parseThresholds('RBC=0.3,rbc=0.5', base), /RBC is given twice/);
  assert.throws(() => parseThresholds('0.3,0.4', base), /bad threshold '0\.3,0\.4': give one number for all classes \(0\.4\), or name each class/);
  assert.throws(() => parseThresholds('0,4', base), /write the decimal point as '\.'/);
});

test('tiles cover the image, overlap by at least the requested margin, and cores partition it', () => {
  const tiles = planTiles(6000, 4000, 1024, 320, 128);
  const xs = [...new Set(tiles.map((t) => t.x))];
  xs.reduce((prev, x) => {
    assert.ok(prev + 1024 - x >= 320);
    return x;
  });
  // starts on the network's largest stride, so tiles see cells as one whole pass would
  for (const t of tiles) assert.ok(t.x % 128 === 0 && t.y % 128 === 0, `${t.x},${t.y}`);
  assert.equal(Math.max(...tiles.map((t) => t.x + t.width)), 6000);
  assert.equal(Math.max(...tiles.map((t) => t.y + t.height)), 4000);
  assert.ok(tiles.every((t) => t.width <= 1024 && t.height <= 1024 && t.width > 320 && t.height > 320));
  // every point belongs to exactly one core
  for (const [x, y] of [
    [0, 0],
    [5999, 3999],
    [700, 700],
    [704, 1000],
    [3000.5, 2000.5],
  ] as const) {
    assert.equal(tiles.filter((t) => x >= t.core[0] && x < t.core[2] && y >= t.core[1] && y < t.core[3]).length, 1, `${x},${y}`);
  }
});

test('a cell seen by two tiles is kept once, by the tile owning its centre', () => {
  const tiles = planTiles(2000, 1000, 1024, 320);
  const [a, b] = tiles;
  assert.ok(a && b);
  const seam = a.core[2];
  const cell: [number, number, number, number] = [seam - 50, 400, seam + 40, 490]; // centre just left of the seam
  const local = (t: typeof a) => [{ label: 'WBC' as const, score: 0.9, box: [cell[0] - t.x, cell[1] - t.y, cell[2] - t.x, cell[3] - t.y] as typeof cell }];
  const merged = mergeTiles([ownedByTile(a, local(a)), ownedByTile(b, local(b))], 0.5);
  assert.equal(merged.length, 1);
  assert.deepEqual(merged[0]?.box, cell);
});

test('resizing keeps the picture: a flat colour stays flat, a gradient keeps its mean', () => {
  const w = 40,
    h = 30;
  const data = new Uint8Array(w * h * 3);
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) data.set([200, 100, (x * 255) / (w - 1)], (y * w + x) * 3);
  for (const [nw, nh] of [
    [20, 15],
    [80, 60],
    [13, 7],
  ] as const) {
    const r = resizePixels({ data, width: w, height: h, channels: 3 }, nw, nh);
    assert.equal(r.data.length, nw * nh * 3);
    let mean = 0;
    for (let i = 0; i < nw * nh; i++) {
      assert.equal(r.data[i * 3], 200);
      assert.equal(r.data[i * 3 + 1], 100);
      mean += r.data[i * 3 + 2]! / (nw * nh);
    }
    assert.ok(Math.abs(mean - 127.5) < 4, `${nw}x${nh}: mean ${mean}`);
  }
});

test('flipping twice is the identity; a flip mirrors the pixels', () => {
  const img = { data: Uint8Array.from({ length: 4 * 3 * 3 }, (_, i) => i), width: 4, height: 3, channels: 3 };
  for (const hz of [true, false]) assert.deepEqual(flipPixels(flipPixels(img, hz), hz).data, img.data);
  assert.deepEqual([...flipPixels(img, true).data.slice(0, 3)], [9, 10, 11]);
  assert.deepEqual([...flipPixels(img, false).data.slice(0, 3)], [24, 25, 26]);
});

test('test-time augmentation rewards agreement and damps a cell seen once', () => {
  const cell = (score: number, dx = 0): Candidate => ({ label: 'RBC', score, box: [10 + dx, 10, 50 + dx, 50] });
  const lone: Candidate = { label: 'Platelets', score: 0.9, box: [100, 100, 120, 120] };
  const out = mergePasses([[cell(0.9), lone], [cell(0.6, 2)], [cell(0.6, -2)]], 0.5);
  const rbc = out.find((c) => c.label === 'RBC')!;
  assert.ok(Math.abs(rbc.score - 0.7) < 1e-9);
  assert.ok(Math.abs(rbc.box[0] - 10 - (0.9 * 0 + 0.6 * 2 + 0.6 * -2) / 2.1) < 1e-9);
  assert.ok(Math.abs(out.find((c) => c.label === 'Platelets')!.score - 0.3) < 1e-9);
  assert.equal(out.length, 2);
});

test('scale estimate: cells in the training range keep native resolution, small or large ones are rescaled', () => {
  const meta = {} as ModelMetadata;
  const rbcs = (px: number, n = 8): Candidate[] => Array.from({ length: n }, (_, i) => ({ label: 'RBC', score: 0.8, box: [i * 200, 0, i * 200 + px, px] }));
  assert.equal(estimateScale(meta, rbcs(96)).factor, 1);
  assert.equal(estimateScale(meta, rbcs(110)).factor, 1);
  const small = estimateScale(meta, rbcs(60));
  assert.ok(small.factor > 1.8 && small.factor < 2.3, String(small.factor));
  assert.equal(small.estimate.basis, 'RBC');
  assert.ok(estimateScale(meta, rbcs(150)).factor < 0.6);
  // measured at 2x, the same cells read as native
  assert.equal(estimateScale(meta, rbcs(48), 2).factor, 1);
  // too few red cells: a white cell (about twice a red cell) decides; nothing: keep
  const wbc: Candidate[] = [{ label: 'WBC', score: 0.9, box: [0, 0, 100, 100] }];
  assert.ok(estimateScale(meta, [...rbcs(96, 3), ...wbc]).factor > 1.5);
  assert.equal(estimateScale(meta, []).factor, 1);
  assert.equal(parseScale('auto'), 'auto');
  assert.equal(parseScale('1.6'), 1.6);
  for (const bad of ['0', '5', '1,6', 'x', '-1']) assert.throws(() => parseScale(bad), /scale must be/);
});

test('topAbove orders as the comparator sort does: score descending, ties by index, at most k', () => {
  let seed = 7;
  const rand = () => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    return seed / 2 ** 31;
  };
  // coarse values so that ties are common, zeros and exact floor values included
  const v = Float32Array.from({ length: 5000 }, () => Math.round(rand() * 40) / 40);
  for (const [start, end, floor, k] of [
    [0, 5000, 0.05, 1000],
    [100, 4100, 0.5, 10_000],
    [3, 3, 0.05, 10],
    [0, 5000, 0, 5000],
  ] as const) {
    const ref: number[] = [];
    for (let i = start; i < end; i++) if (v[i]! > floor) ref.push(i - start);
    ref.sort((a, b) => v[start + b]! - v[start + a]! || a - b);
    assert.deepEqual(topAbove(v, start, end, floor, k), ref.slice(0, k), `${start}-${end} > ${floor}, k ${k}`);
  }
  const ref = (x: Float32Array, start: number, end: number, floor: number, k: number) => {
    const r: number[] = [];
    for (let i = start; i < end; i++) if (x[i]! > floor) r.push(i - start);
    return r.sort((a, b) => x[start + b]! - x[start + a]! || a - b).slice(0, k);
  };
  // a view into a larger buffer (the network's outputs), with extremes: Infinity, a
  // denormal, -0, NaN; a negative floor and more than 2^21 values take the comparator path
  const buf = new Float32Array(64);
  buf.set([0.3, Infinity, 1e-45, -0, Number.NaN, 0.3, -2, 0.7], 8);
  const view = buf.subarray(8, 16);
  assert.deepEqual(topAbove(view, 0, 8, 0, 10), ref(view, 0, 8, 0, 10));
  assert.deepEqual(topAbove(view, 0, 8, -5, 10), ref(view, 0, 8, -5, 10));
  const big = new Float32Array(2 ** 21 + 5);
  big[2 ** 21 + 3] = 0.9;
  big[7] = 0.9;
  big[100] = 0.95;
  assert.deepEqual(topAbove(big, 0, big.length, 0.05, 10), [100, 7, 2 ** 21 + 3]);
});

test('a planar output (anchor, class, y, x per level) decodes to exactly the interleaved one', () => {
  let seed = 11;
  const rand = () => {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    return seed / 2 ** 31;
  };
  const levels = [8, 16, 32].map((stride, i) => ({ name: `P${i + 3}`, stride, sizes: [24 * 2 ** i, 30 * 2 ** i], aspect_ratios: [0.7, 1, 1.4] }));
  const meta = {
    classes: ['RBC', 'WBC', 'Platelets'].map((name) => ({ name, colour: '#000' })),
    input: { pad_multiple: 32 },
    anchors: { levels },
    box_coder: { weights: [1, 1, 1, 1], clamp: Math.log(1000 / 16) },
    // a small top-k so that it cuts, and ties (coarse scores) that torchvision's order settles
    postprocess: { score_floor: 0.05, topk_per_level: 40, nms_iou: 0.4, max_detections: 1000 },
  } as unknown as ModelMetadata;
  const [h, w] = [96, 128];
  const grids = levelGrids(meta, h, w);
  const n = grids.reduce((t, g) => t + g.height * g.width * g.anchorsPerCell, 0);
  const K = 3;
  const scores = Float32Array.from({ length: n * K }, () => Math.round(rand() * 20) / 20);
  const deltas = Float32Array.from({ length: n * 4 }, () => (rand() - 0.5) * 0.6);
  // the same values, each level rearranged from (y, x, a, c) to (a, c, y, x)
  const [ps, pd] = [new Float32Array(scores.length), new Float32Array(deltas.length)];
  for (const g of grids) {
    const hw = g.height * g.width;
    const A = g.anchorsPerCell;
    for (let cell = 0; cell < hw; cell++)
      for (let a = 0; a < A; a++) {
        const anchor = g.offset + cell * A + a;
        for (let c = 0; c < K; c++) ps[g.offset * K + (a * K + c) * hw + cell] = scores[anchor * K + c]!;
        for (let c = 0; c < 4; c++) pd[g.offset * 4 + (a * 4 + c) * hw + cell] = deltas[anchor * 4 + c]!;
      }
  }
  const interleaved = decodeDetections(meta, scores, deltas, h, w);
  const planar = decodeDetections({ ...meta, outputs: { layout: 'planar' } }, ps, pd, h, w);
  assert.ok(interleaved.length > 50, `${interleaved.length} candidates`);
  assert.deepEqual(planar, interleaved);
  // and the layout matters: read as interleaved, the planar arrays give other boxes
  assert.notDeepEqual(decodeDetections(meta, ps, pd, h, w), interleaved);
});

const NORM = { scale: 1 / 255, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] };
const FLOAT_IN = { input: { layout: 'NCHW', ...NORM, pad_value: 0.5 } } as unknown as ModelMetadata;
const UINT8_IN = { input: { layout: 'NHWC', dtype: 'uint8', ...NORM, pad_value: 0 } } as unknown as ModelMetadata;
/** The 8-bit model's padding: the mean colour, which its folded normalisation makes 0. */
const PAD_RGB = [124, 116, 104];

test('toTensor writes every element, padding included: a reused buffer gives the fresh result', () => {
  const [w, h, ph, pw] = [5, 3, 8, 8];
  const img = { data: Uint8Array.from({ length: w * h * 3 }, (_, i) => (i * 37) % 256), width: w, height: h, channels: 3 };
  const fresh = toTensor(img, FLOAT_IN, ph, pw);
  assert.deepEqual([fresh.dims, fresh.height, fresh.width], [[1, 3, ph, pw], ph, pw]);
  const dirty = new Float32Array(3 * ph * pw).fill(Number.NaN);
  assert.deepEqual([...toTensor(img, FLOAT_IN, ph, pw, dirty).data], [...fresh.data]);
  assert.equal(fresh.data[w], 0.5); // right of the image
  assert.equal(fresh.data[2 * ph * pw + h * pw], 0.5); // below it, last channel
  assert.ok(Math.abs(fresh.data[0]! - (0 / 255 - 0.485) / 0.229) < 1e-6);

  // the 8-bit model: the pixels as they are, NHWC, padded with the mean colour
  const q = toTensor(img, UINT8_IN, ph, pw);
  assert.ok(q.data instanceof Uint8Array);
  assert.deepEqual(q.dims, [1, ph, pw, 3]);
  const dirty8 = new Uint8Array(3 * ph * pw).fill(7);
  assert.deepEqual([...toTensor(img, UINT8_IN, ph, pw, dirty8).data], [...q.data]);
  const rgb = (x: number, y: number) => [...q.data.subarray(3 * (y * pw + x), 3 * (y * pw + x) + 3)];
  assert.deepEqual(rgb(4, 2), [...img.data.subarray(3 * (2 * w + 4), 3 * (2 * w + 4) + 3)]);
  assert.deepEqual(rgb(w, 0), PAD_RGB); // right of the image
  assert.deepEqual(rgb(0, h), PAD_RGB); // below it
  assert.deepEqual(rgb(pw - 1, ph - 1), PAD_RGB);
  // a buffer of the other type or size is not written into
  assert.notEqual(toTensor(img, UINT8_IN, ph, pw, dirty).data, dirty);
  // RGBA: alpha is dropped, the same tensor
  const rgba = Uint8Array.from({ length: w * h * 4 }, (_, i) => (i % 4 === 3 ? 9 : img.data[3 * (i >> 2) + (i % 4)]!));
  assert.deepEqual([...toTensor({ ...img, data: rgba, channels: 4 }, UINT8_IN, ph, pw).data], [...q.data]);
  assert.deepEqual([...toTensor({ ...img, data: rgba, channels: 4 }, FLOAT_IN, ph, pw).data], [...fresh.data]);
});

test('toTensor makes dark pixels (all channels below DARK_LEVEL) padding, and only those', () => {
  const meta = { input: { ...FLOAT_IN.input, pad_value: 0 } } as ModelMetadata;
  const D = DARK_LEVEL;
  // black, just dark, one channel at the level, a dark purple nucleus-like pixel
  const px = [0, 0, 0, D - 1, D - 1, D - 1, D - 1, D, D - 1, 30, 10, 90];
  const img = { data: Uint8Array.from(px), width: 4, height: 1, channels: 3 };
  const t = toTensor(img, meta, 1, 4).data;
  const at = (x: number) => [t[x], t[4 + x], t[8 + x]];
  assert.deepEqual(at(0), [0, 0, 0]);
  assert.deepEqual(at(1), [0, 0, 0]);
  assert.ok(Math.abs(at(2)[1]! - (D / 255 - 0.456) / 0.224) < 1e-6, 'a pixel with one channel at the level is kept');
  assert.ok(Math.abs(at(3)[2]! - (90 / 255 - 0.406) / 0.225) < 1e-6);
  const q = toTensor(img, UINT8_IN, 1, 4).data;
  assert.deepEqual([...q], [...PAD_RGB, ...PAD_RGB, D - 1, D, D - 1, 30, 10, 90]);
});

test('white balance: the background is the brightest quarter, made grey; cells and dark margins do not move it', () => {
  // a warm background (230, 200, 160), purple "cells" over a third of it, a black margin
  const [w, h] = [64, 48];
  const data = new Uint8Array(w * h * 3);
  for (let y = 0; y < h; y++)
    for (let x = 0; x < w; x++) {
      const px = x < 6 ? [0, 0, 0] : (x * 7 + y * 3) % 3 === 0 ? [150, 90, 160] : [230 + ((x + y) % 3), 200, 160];
      data.set(px, 3 * (y * w + x));
    }
  const img = { data, width: w, height: h, channels: 3 };
  const bg = backgroundColour(img)!;
  assert.ok(bg[0] >= 230 && bg[0] <= 232 && bg[1] === 200 && bg[2] === 160, `${bg}`);
  const g = whiteBalanceGains(bg);
  const out = applyGains(img, g);
  const at = (x: number, y: number) => [...out.data.subarray(3 * (y * w + x), 3 * (y * w + x) + 3)];
  const grey = at(10, 1);
  assert.ok(Math.max(...grey) - Math.min(...grey) <= 2, `background after: ${grey}`);
  assert.deepEqual(at(0, 0), [0, 0, 0]); // black stays black
  // a field in a black frame four times its size: the background is still the field's
  const big = { data: new Uint8Array(4 * w * 4 * h * 3), width: 4 * w, height: 4 * h, channels: 3 };
  for (let y = 0; y < h; y++) big.data.set(data.subarray(3 * y * w, 3 * (y + 1) * w), 3 * ((y + h) * 4 * w + w));
  assert.deepEqual(backgroundColour(big), bg);
  // gains stay within 0.6-1.6, an empty image has none to give, a grey one needs none
  assert.deepEqual(
    whiteBalanceGains([250, 20, 250]).map((v) => Math.min(1.6, Math.max(0.6, v))),
    whiteBalanceGains([250, 20, 250]),
  );
  assert.ok(whiteBalanceGains([250, 20, 250])[1] === 1.6);
  assert.deepEqual(whiteBalanceGains(backgroundColour({ data: new Uint8Array(0), width: 0, height: 0, channels: 3 })), [1, 1, 1]);
  assert.deepEqual(whiteBalanceGains([200, 200, 200]), [1, 1, 1]);
  // RGBA in, RGB out, alpha ignored; values capped at 255
  const rgba = applyGains({ data: Uint8Array.from([100, 200, 250, 7]), width: 1, height: 1, channels: 4 }, [1.5, 1, 1.2]);
  assert.deepEqual([...rgba.data, rgba.channels], [150, 200, 255, 3]);
});

test('toTensor with white-balance gains is the tensor of the balanced pixels (float and 8-bit inputs)', () => {
  const [w, h, ph, pw] = [7, 5, 8, 8];
  // every level, the near-dark ones included: darkness is decided after the gains, as training does
  const img = { data: Uint8Array.from({ length: w * h * 3 }, (_, i) => (i * 53 + (i % 3) * 90) % 256), width: w, height: h, channels: 3 };
  const gains: [number, number, number] = [1.6, 1.2, 0.6];
  for (const meta of [FLOAT_IN, UINT8_IN]) {
    const balanced = toTensor(applyGains(img, gains), meta, ph, pw).data;
    const direct = toTensor(img, { ...meta, input: { ...meta.input, gains } }, ph, pw).data;
    assert.deepEqual([...direct], [...balanced]);
    assert.notDeepEqual([...direct], [...toTensor(img, meta, ph, pw).data]);
  }
});
