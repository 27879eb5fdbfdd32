import assert from 'node:assert/strict';
import { test } from 'node:test';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { SAMPLES } from '../helpers.js';
import {
  parseCoco,
  parseCsv,
  parseVoc,
  parseYolo,
  toCoco,
  toCsv,
  totals,
  toVoc,
  toYolo,
  type CountDocument,
  type ImageResult,
} from '../../src/core/formats.js';
import type { Box, CellClass } from '../../src/core/types.js';

type Labelled = { label: CellClass; box: Box };
const boxes: [Labelled, Labelled, Labelled] = [
  { label: 'RBC', box: [10, 20, 110, 120] },
  { label: 'WBC', box: [200, 150, 390, 340] },
  { label: 'Platelets', box: [0, 0, 35, 30] },
];

test('VOC XML round trip (LabelImg 1-based coordinates)', () => {
  const xml = toVoc('dir/a & b.jpg', 640, 480, boxes);
  assert.match(xml, /<filename>a &amp; b.jpg<\/filename>/);
  assert.match(xml, /<xmin>11<\/xmin>/);
  const back = parseVoc(xml);
  assert.equal(back.width, 640);
  assert.deepEqual(back.boxes, boxes);
  assert.equal(back.problems.length, 0);
});

test('VOC reader reports unknown classes and zero-size boxes', () => {
  const xml =
    '<annotation><object><name>Platelet</name><bndbox><xmin>5</xmin><ymin>5</ymin><xmax>20</xmax><ymax>20</ymax></bndbox></object>' +
    '<object><name>cat</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>9</xmax><ymax>9</ymax></bndbox></object>' +
    '<object><name>RBC</name><bndbox><xmin>7</xmin><ymin>7</ymin><xmax>7</xmax><ymax>30</ymax></bndbox></object></annotation>';
  const r = parseVoc(xml);
  assert.deepEqual(
    r.boxes.map((b) => b.label),
    ['Platelets'],
  );
  assert.equal(r.problems.length, 2);
  assert.throws(() => parseVoc('hello'), /not a Pascal VOC/);
});

test('YOLO round trip with hemocount class order and with TXL-PBC order', () => {
  const txt = toYolo(640, 480, boxes);
  assert.equal(txt.split('\n')[0]?.split(' ')[0], '0');
  const back = parseYolo(txt, 640, 480, ['RBC', 'WBC', 'Platelets']);
  for (const [i, b] of back.boxes.entries()) for (const [k, v] of b.box.entries()) assert.ok(Math.abs(v - (boxes[i]?.box[k] ?? NaN)) < 1e-3);
  const txl = parseYolo('2 0.5 0.5 0.1 0.1\n7 0.5 0.5 0.1 0.1\n', 100, 100, ['WBC', 'RBC', 'PC']);
  assert.deepEqual(
    txl.boxes.map((b) => b.label),
    ['Platelets'],
  );
  assert.equal(txl.problems.length, 1);
});

test('COCO round trip', () => {
  const doc = toCoco([{ file: 'a.jpg', width: 640, height: 480, boxes: boxes.map((b) => ({ ...b, score: 0.5 })) }]);
  const back = parseCoco(doc);
  assert.equal(back.images.length, 1);
  assert.deepEqual(
    back.images[0]?.boxes.map((b) => b.box),
    boxes.map((b) => b.box),
  );
  assert.throws(() => parseCoco('{}'), /not a COCO/);
});

test('CSV: a row per image and a totals row, errors kept', () => {
  const ok: ImageResult = {
    file: 'x,1.jpg',
    width: 640,
    height: 480,
    counts: { RBC: 3, WBC: 1, Platelets: 0 },
    uncertain: { RBC: 1, WBC: 0, Platelets: 0 },
    meanScore: { RBC: 0.8, WBC: 0.9, Platelets: null },
    detections: [],
  };
  const bad = { ...ok, file: 'bad.png', counts: { RBC: 0, WBC: 0, Platelets: 0 }, error: 'corrupt' };
  const formula = { ...ok, file: '=HYPERLINK("x").jpg' };
  const doc: CountDocument = {
    model: { name: 'm', version: '1', sha256: 'x' },
    thresholds: { RBC: 0.25, WBC: 0.65, Platelets: 0.35 },
    review: { RBC: 0.1, WBC: 0.5, Platelets: 0.2 },
    images: [ok, bad, formula],
    totals: totals([ok, bad, formula]),
  };
  const rows = parseCsv(toCsv(doc));
  assert.equal(rows.length, 5);
  const [head, first, second, third, total] = rows;
  assert.ok(head && first && second && third && total);
  // a spreadsheet must not run a file name as a formula
  assert.equal(third[0], `'=HYPERLINK("x").jpg`);
  assert.equal(first[0], 'x,1.jpg');
  assert.equal(first[head.indexOf('RBC')], '3');
  assert.equal(second[head.indexOf('error')], 'corrupt');
  // a failed image has no counts: blank cells, which a spreadsheet's mean skips, not zeros
  for (const col of ['width', 'RBC', 'WBC', 'Platelets', 'RBC_uncertain']) assert.equal(second[head.indexOf(col)], '', col);
  assert.equal(total[0], 'TOTAL');
  assert.equal(total[head.indexOf('RBC_uncertain')], '2');
  assert.equal(doc.totals.failed, 1);
});

test('ground truth rules: truncated XML, boxes outside, inverted, zero-size and non-numeric boxes are reported, never taken silently', () => {
  const full = readFileSync(join(SAMPLES, 'truth', 'BloodImage_00004.xml'), 'utf8');
  assert.throws(() => parseVoc(full.slice(0, Math.floor(full.length * 0.6))), /truncated or malformed Pascal VOC XML/);
  const obj = (x1: number, y1: number, x2: number, y2: number) =>
    `<object><name>RBC</name><bndbox><xmin>${x1}</xmin><ymin>${y1}</ymin><xmax>${x2}</xmax><ymax>${y2}</ymax></bndbox></object>`;
  const voc = parseVoc(
    `<annotation><filename>a.jpg</filename><size><width>100</width><height>80</height></size>${obj(1, 1, 50, 40)}${obj(60, 10, 140, 50)}${obj(50, 50, 20, 60)}${obj(10, 10, 10, 30)}${obj(200, 200, 260, 260)}</annotation>`,
  );
  assert.equal(voc.boxes.length, 2);
  assert.deepEqual(voc.boxes[1]?.box, [59, 9, 100, 50]);
  assert.match(voc.problems.join('\n'), /object 2 \(RBC\): box \[59, 9, 140, 50\] reaches outside the 100x80 image: clipped/);
  assert.match(voc.problems.join('\n'), /object 3 \(RBC\): .*inverted corners: dropped/);
  assert.match(voc.problems.join('\n'), /object 4 \(RBC\): .*zero size: dropped/);
  assert.match(voc.problems.join('\n'), /object 5 \(RBC\): .*lies outside the 100x80 image: dropped/);
  const yolo = parseYolo('1 1.5 0.5 0.2 0.2\n0 0.5 0.5 -0.1 0.2\n0 0.5 0.5 0.2 0.2\n', 100, 100, ['RBC', 'WBC', 'Platelets']);
  assert.equal(yolo.boxes.length, 1);
  assert.match(yolo.problems.join('\n'), /line 1 \(WBC\): .*lies outside the 100x100 image: dropped/);
  assert.match(yolo.problems.join('\n'), /line 2 \(RBC\): .*inverted corners: dropped/);
  const coco = parseCoco(
    JSON.stringify({
      categories: [{ id: 1, name: 'RBC' }],
      images: [{ id: 1, file_name: 'a.jpg', width: 100, height: 100 }],
      annotations: [
        { id: 1, image_id: 1, category_id: 1, bbox: '10 10 5 5' },
        { id: 2, image_id: 1, category_id: 1, bbox: null },
        null,
        { id: 4, image_id: 1, category_id: 1, bbox: [10, 10, 20, 20] },
      ],
    }),
  );
  assert.equal(coco.images[0]?.boxes.length, 1);
  assert.match(coco.problems.join('\n'), /annotation 1: bbox "10 10 5 5" is not \[x, y, width, height\] numbers: dropped/);
  assert.match(coco.problems.join('\n'), /annotation 2: bbox null/);
  assert.match(coco.problems.join('\n'), /annotations\[2\] is not an object/);
  assert.throws(() => parseCoco('{"images": [{"id": 1}], "annotations": []}'), /images\[0\] needs "id" and a "file_name" string/);
  assert.throws(() => parseCoco('{"images": 3}'), /not a COCO document/);
  assert.throws(() => parseCoco('{nope'), /not valid JSON/);
});

test('COCO: iscrowd annotations (undecided cells, as the training module writes them) are kept apart from the truth', () => {
  const doc = {
    categories: [{ id: 1, name: 'RBC' }],
    images: [{ id: 1, file_name: 'a.jpg', width: 640, height: 480 }],
    annotations: [
      { id: 1, image_id: 1, category_id: 1, bbox: [0, 0, 10, 10], iscrowd: 0 },
      { id: 2, image_id: 1, category_id: 1, bbox: [20, 0, 10, 10], iscrowd: 1 },
    ],
  };
  const [im] = parseCoco(JSON.stringify(doc)).images;
  assert.deepEqual(im?.boxes, [{ label: 'RBC', box: [0, 0, 10, 10] }]);
  assert.deepEqual(im?.undecided, [{ label: 'RBC', box: [20, 0, 30, 10] }]);
});

test('cells to review go to VOC marked difficult; readers keep them apart as undecided until a reviewer accepts them', () => {
  const xml = toVoc('a.jpg', 640, 480, [
    { ...boxes[0], uncertain: false },
    { ...boxes[1], uncertain: true },
  ]);
  assert.equal((xml.match(/<difficult>1<\/difficult>/g) ?? []).length, 1);
  const back = parseVoc(xml);
  assert.deepEqual(
    back.boxes.map((b) => b.label),
    ['RBC'],
  );
  assert.deepEqual(back.undecided, [boxes[1]]);
  assert.deepEqual(back.problems, []);
  // the reviewer unticks "difficult" in LabelImg: now it is truth
  assert.equal(parseVoc(xml.replace('<difficult>1</difficult>', '<difficult>0</difficult>')).boxes.length, 2);
});

test("one vocabulary: every alias in vocabulary.json names its class, and the colours are the paper's", async () => {
  const { classFromName, COLOURS, SHORT } = await import('../../src/core/vocabulary.js');
  const { readFileSync } = await import('node:fs');
  const vocab = JSON.parse(readFileSync(new URL('../../../vocabulary.json', import.meta.url), 'utf8'));
  for (const c of vocab.classes) for (const a of [c.name, ...c.aliases]) assert.equal(classFromName(a), c.name, a);
  assert.equal(classFromName('Red Blood Cell'), 'RBC');
  assert.equal(classFromName('neutrophil'), null);
  assert.deepEqual(COLOURS, { RBC: '#ff8c00', WBC: '#66ccff', Platelets: '#1f3fbf' });
  assert.equal(SHORT.Platelets, 'PLT');
});
