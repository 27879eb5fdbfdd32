/** The CLI end to end, as a user runs it, on the committed samples and model. */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { copyFileSync, existsSync, mkdirSync, readFileSync, readdirSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { statfs } from 'node:fs/promises';
import { join } from 'node:path';
import { test } from 'node:test';
import sharp from 'sharp';
import { parseCoco, parseCsv, parseVoc, parseYolo, toVoc, toYolo } from '../src/core/formats.js';
import { readMetadata, withMetadata } from '../src/adapters/onnx.js';
import { CLI, pngHeaderOnly, ROOT, SAMPLES, tmp } from './helpers.js';
import { makeLargeSmear } from '../bench/large.js';
import { TILE_OVERLAP, TILE_SIZE } from '../src/core/pipeline.js';
import { planTiles } from '../src/core/tiling.js';

const MODEL_FILE = join(ROOT, 'models', 'hemocount-default.onnx');
const pngWidth = (b: Buffer) => b.readUInt32BE(16);
const run = (args: string[], env: NodeJS.ProcessEnv = {}) =>
  spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', cwd: ROOT, env: { ...process.env, ...env }, maxBuffer: 64 << 20 });

test('count on the samples folder: table, JSON, CSV, pictures, VOC, YOLO, COCO', async () => {
  const out = tmp();
  const r = run([
    'count',
    'samples',
    '--out',
    join(out, 'img'),
    '--json',
    join(out, 'r.json'),
    '--csv',
    join(out, 'r.csv'),
    '--voc',
    join(out, 'voc'),
    '--yolo',
    join(out, 'yolo'),
    '--coco',
    join(out, 'coco.json'),
  ]);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stdout, /BloodImage_00004\.jpg\s+\d+\s+\d+/);
  assert.match(r.stdout, /TOTAL/);
  const doc = JSON.parse(readFileSync(join(out, 'r.json'), 'utf8'));
  assert.equal(doc.images.length, 5);
  assert.equal(doc.model.sha256.length, 64);
  for (const im of doc.images) {
    assert.equal(im.detections.filter((d: { uncertain: boolean; label: string }) => !d.uncertain && d.label === 'RBC').length, im.counts.RBC);
    for (const d of im.detections) assert.ok(d.box[2] <= im.width && d.box[3] <= im.height && d.box[0] >= 0);
  }
  assert.equal(
    doc.totals.counts.RBC,
    doc.images.reduce((s: number, i: { counts: { RBC: number } }) => s + i.counts.RBC, 0),
  );
  const csv = parseCsv(readFileSync(join(out, 'r.csv'), 'utf8'));
  assert.equal(csv.length, 7);
  const [head] = csv;
  assert.ok(head);
  assert.equal(Number(csv[6]?.[head.indexOf('WBC')]), doc.totals.counts.WBC);
  const png = await sharp(join(out, 'img', 'BloodImage_00004.annotated.png')).metadata();
  // the picture, and below it a strip with the legend (outside the cells)
  assert.equal(png.width, 640);
  assert.ok(png.height! > 480 && png.height! < 540, `${png.height}`);
  assert.equal(png.channels, 3);
  const voc = parseVoc(readFileSync(join(out, 'voc', 'BloodImage_00004.xml'), 'utf8'));
  const im4 = doc.images.find((i: { file: string }) => i.file.endsWith('BloodImage_00004.jpg'));
  assert.equal(voc.boxes.length, im4.counts.RBC + im4.counts.WBC + im4.counts.Platelets);
  const yolo = parseYolo(
    readFileSync(join(out, 'yolo', 'BloodImage_00004.txt'), 'utf8'),
    640,
    480,
    readFileSync(join(out, 'yolo', 'classes.txt'), 'utf8')
      .trim()
      .split('\n'),
  );
  assert.equal(yolo.boxes.filter((b) => b.label === 'WBC').length, im4.counts.WBC);
  const coco = parseCoco(readFileSync(join(out, 'coco.json'), 'utf8'));
  assert.equal(coco.images.length, 5);
});

test('thresholds from the command line change the counts, JSON to stdout', () => {
  const lo = JSON.parse(run(['count', 'samples/BloodImage_00011.jpg', '--threshold', '0.2', '--json', '-']).stdout);
  const hi = JSON.parse(run(['count', 'samples/BloodImage_00011.jpg', '--threshold', 'RBC=0.8,WBC=0.8,Platelets=0.8', '--json', '-']).stdout);
  assert.equal(lo.thresholds.RBC, 0.2);
  assert.ok(lo.images[0].counts.RBC > hi.images[0].counts.RBC);
  assert.equal(run(['count', 'samples', '--threshold', 'RBC=7']).status, 2);
});

test('a truncated JPEG and a text file named .png are reported; the rest is counted; exit 1', () => {
  const dir = tmp();
  const data = join(dir, 'batch');
  mkdirSync(join(data, 'sub'), { recursive: true });
  copyFileSync(join(SAMPLES, 'BloodImage_00004.jpg'), join(data, 'good.jpg'));
  copyFileSync(join(SAMPLES, 'BloodImage_00017.jpg'), join(data, 'sub', 'good2.jpg'));
  const jpg = readFileSync(join(SAMPLES, 'BloodImage_00011.jpg'));
  writeFileSync(join(data, 'truncated.jpg'), jpg.subarray(0, Math.floor(jpg.length / 2)));
  writeFileSync(join(data, 'notes.png'), 'this is a text file, not a picture\n');
  const before = readFileSync(join(data, 'good.jpg'));
  const r = run(['count', data, '--json', join(dir, 'r.json'), '--out', join(dir, 'out')]);
  assert.equal(r.status, 1);
  assert.match(r.stderr, /truncated\.jpg: .*(corrupt|truncated|premature)/i);
  assert.match(r.stderr, /notes\.png: .*not an image/i);
  const doc = JSON.parse(readFileSync(join(dir, 'r.json'), 'utf8'));
  assert.equal(doc.totals.images, 2);
  assert.equal(doc.totals.failed, 2);
  assert.ok(existsSync(join(dir, 'out', 'sub', 'good2.annotated.png')), 'sub-folder layout mirrored');
  assert.deepEqual(readFileSync(join(data, 'good.jpg')), before, 'inputs untouched');
  assert.equal(readdirSync(data).length, 4);
});

test('re-counting a folder skips the annotated pictures hemocount wrote into it', () => {
  const dir = tmp();
  copyFileSync(join(SAMPLES, 'BloodImage_00004.jpg'), join(dir, 'a.jpg'));
  assert.equal(run(['count', dir, '--out', dir, '--quiet']).status, 0);
  assert.ok(existsSync(join(dir, 'a.annotated.png')));
  const again = JSON.parse(run(['count', dir, '--json', '-']).stdout);
  assert.equal(again.images.length, 1);
});

test('an output that would replace an input is refused', () => {
  const dir = tmp();
  copyFileSync(join(SAMPLES, 'BloodImage_00004.jpg'), join(dir, 'a.jpg'));
  const size = statSync(join(dir, 'a.jpg')).size;
  const r = run(['count', join(dir, 'a.jpg'), '--json', join(dir, 'a.jpg')]);
  assert.equal(r.status, 2);
  assert.match(r.stderr, /refusing to overwrite an input/);
  assert.equal(statSync(join(dir, 'a.jpg')).size, size);
  copyFileSync(join(ROOT, 'models', 'hemocount-default.onnx'), join(dir, 'm.onnx'));
  const before = readFileSync(join(dir, 'm.onnx'));
  const c = run(['calibrate', '--data', 'samples', '--min-cells', '1', '--model', join(dir, 'm.onnx'), '--out', join(dir, 'm.onnx')]);
  assert.equal(c.status, 2);
  assert.match(c.stderr, /is the input model, which is never modified/);
  // export too writes only where hemocount may: checked before any Python runs
  writeFileSync(join(dir, 'precious.onnx'), 'my model');
  const ex = run(['export', join(dir, 'run.pt'), '--out', join(dir, 'precious.onnx')]);
  assert.equal(ex.status, 2);
  assert.match(ex.stderr, /precious\.onnx: exists and was not written by hemocount/);
  assert.equal(readFileSync(join(dir, 'precious.onnx'), 'utf8'), 'my model');
  assert.deepEqual(readFileSync(join(dir, 'm.onnx')), before);
});

test('evaluate prints the paper tables; calibrate writes a new model that loads', () => {
  const r = run(['evaluate', '--data', 'samples', '--json', '-']);
  assert.equal(r.status, 0, r.stderr);
  const rep = JSON.parse(r.stdout);
  assert.equal(rep.evaluation.images, 5);
  assert.equal(rep.evaluation.classes.RBC.sweep.length, 14);
  assert.ok(rep.evaluation.classes.WBC.ap50 > 0.5);
  const t = run(['evaluate', '--data', 'samples']);
  assert.match(t.stdout, /Threshold\s+Accuracy \[%\]\s+Precision \[%\]\s+Recall \[%\]\s+F1-Score \[%\]/);
  assert.match(t.stdout, /^\*\s+0\.\d\d/m);
  const out = join(tmp(), 'calibrated.onnx');
  const c = run(['calibrate', '--data', 'samples', '--min-cells', '1', '--out', out, '--criterion', 'accuracy']);
  assert.match(c.stderr, /warning: only \d+ WBC cells annotated/);
  assert.equal(c.status, 0, c.stderr);
  const meta = readMetadata(new Uint8Array(readFileSync(out)));
  assert.equal((meta.calibration as { criterion: string }).criterion, 'accuracy');
  // like count's outputs: its own file may be replaced, a file hemocount did not write may not (checked before evaluating)
  const mine = join(tmp(), 'mine.onnx');
  writeFileSync(mine, 'precious');
  const refused = run(['calibrate', '--data', 'samples', '--min-cells', '1', '--out', mine, '--quiet']);
  assert.equal(refused.status, 2);
  assert.match(refused.stderr, /mine\.onnx: exists and was not written by hemocount[\s\S]*--overwrite/);
  assert.doesNotMatch(refused.stderr, /image\(s\)/, 'refused before evaluating');
  assert.equal(readFileSync(mine, 'utf8'), 'precious');
  // calibrating again into the same folder, with the JSON beside the model, keeps both in the ledger
  for (const criterion of ['f1', 'accuracy', 'f1']) {
    const again = run(['calibrate', '--data', 'samples', '--min-cells', '1', '--out', out, '--json', `${out}.json`, '--criterion', criterion, '--quiet']);
    assert.equal(again.status, 0, `${criterion}: ${again.stderr}`);
  }
  for (const k of ['RBC', 'WBC', 'Platelets'] as const) assert.ok(meta.review[k] <= meta.thresholds[k]);
  // count uses the thresholds of the model as calibrated last (criterion f1)
  const last = readMetadata(new Uint8Array(readFileSync(out)));
  assert.equal((last.calibration as { criterion: string }).criterion, 'f1');
  const again = run(['count', 'samples/BloodImage_00004.jpg', '--model', out, '--json', '-']);
  assert.equal(JSON.parse(again.stdout).thresholds.RBC, last.thresholds.RBC);
  const sel = run(['select', '--data', 'samples', 'models/hemocount-default.onnx', out]);
  assert.equal(sel.status, 0, sel.stderr);
  assert.match(sel.stdout, /Table 1\. RBC F1-Score \[%\]/);
  assert.match(sel.stdout, /Table 3\. Platelets F1-Score \[%\]/);
  assert.match(sel.stdout, /best model: /);
  // the other model's gap to the best, with an interval around it
  assert.match(sel.stdout, /Against the best model \(paired bootstrap over images, 1000 resamples/);
  assert.match(sel.stdout, /\.onnx\s+[-+]\d+\.\d\d\s+[-+]\d+\.\d\d \.\. [-+]\d+\.\d\d/);
});

test('calibrate warns when the model finds no cell of a class right at any threshold', () => {
  // labels that match nothing the model sees (a lab's labels for another image, say)
  const dir = tmp();
  copyFileSync(join(SAMPLES, 'BloodImage_00004.jpg'), join(dir, 'BloodImage_00004.jpg'));
  const nowhere = (['RBC', 'WBC', 'Platelets'] as const).flatMap((label, k) =>
    Array.from({ length: 4 }, (_, i) => ({ label, box: [2 + 12 * i, 2 + 12 * k, 8 + 12 * i, 8 + 12 * k] as [number, number, number, number] })),
  );
  writeFileSync(join(dir, 'BloodImage_00004.xml'), toVoc('BloodImage_00004.jpg', 640, 480, nowhere));
  const c = run(['calibrate', '--data', dir, '--min-cells', '1', '--out', join(dir, 'm.onnx'), '--quiet']);
  assert.equal(c.status, 0, c.stderr);
  for (const k of ['RBC', 'WBC', 'Platelets'])
    assert.match(c.stderr, new RegExp(`finds hardly any ${k} cell right on these images at any threshold \\(best F1 0.0 %\\)`));
});

test('two VOC files labelling one image: the one named after it is used, the other reported', () => {
  const dir = tmp();
  for (const n of ['BloodImage_00004', 'BloodImage_00011']) copyFileSync(join(SAMPLES, `${n}.jpg`), join(dir, `${n}.jpg`));
  copyFileSync(join(SAMPLES, 'truth', 'BloodImage_00011.xml'), join(dir, 'BloodImage_00011.xml'));
  const xml = readFileSync(join(SAMPLES, 'truth', 'BloodImage_00004.xml'), 'utf8').replace('BloodImage_00004.jpg', 'BloodImage_00011.jpg');
  writeFileSync(join(dir, 'BloodImage_00004.xml'), xml);
  const r = run(['evaluate', '--data', dir, '--json', '-']);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stderr, /BloodImage_00004\.xml: describes BloodImage_00011\.jpg, which BloodImage_00011\.xml describes too: not used/);
  const doc = JSON.parse(r.stdout);
  assert.equal(doc.evaluation.images, 1);
  const own = parseVoc(readFileSync(join(dir, 'BloodImage_00011.xml'), 'utf8')).boxes.filter((b) => b.label === 'RBC').length;
  assert.equal(doc.evaluation.classes.RBC.sweep[0].truth, own);
});

test('report writes HTML, Markdown and figures', () => {
  const dir = tmp();
  const r = run(['report', '--data', 'samples', '--out', join(dir, 'rep.html'), '--log', 'models/train_log.jsonl']);
  assert.equal(r.status, 0, r.stderr);
  const html = readFileSync(join(dir, 'rep.html'), 'utf8');
  assert.match(html, /<svg/);
  assert.match(html, /Learning curve/);
  for (const f of ['count-vs-threshold-RBC', 'precision-recall', 'bland-altman-WBC', 'learning-curve']) assert.ok(existsSync(join(dir, `rep-${f}.png`)), f);
  // the chosen threshold is marked, and the PNGs are at print resolution
  const meta = readMetadata(new Uint8Array(readFileSync(MODEL_FILE)), MODEL_FILE);
  assert.match(readFileSync(join(dir, 'rep-count-vs-threshold-RBC.svg'), 'utf8'), new RegExp(`model threshold ${meta.thresholds.RBC.toFixed(2)}`));
  assert.ok(pngWidth(readFileSync(join(dir, 'rep-f1-vs-threshold.png'))) >= 2000);
  // a report never replaces a file hemocount did not write (the Markdown beside the HTML, a figure) unless told to
  writeFileSync(join(dir, 'notes.md'), 'my notes');
  writeFileSync(join(dir, 'rep-precision-recall.png'), 'my figure');
  for (const name of ['notes.html', 'rep.html']) {
    const again = run(['report', '--data', 'samples', '--out', join(dir, name), '--quiet']);
    assert.equal(again.status, 2, name);
    assert.match(again.stderr, /was not written by hemocount/);
  }
  assert.equal(readFileSync(join(dir, 'notes.md'), 'utf8'), 'my notes');
  assert.equal(readFileSync(join(dir, 'rep-precision-recall.png'), 'utf8'), 'my figure');
  assert.equal(run(['report', '--data', 'samples', '--out', join(dir, 'rep.html'), '--quiet', '--overwrite']).status, 0);
  assert.ok(pngWidth(readFileSync(join(dir, 'rep-precision-recall.png'))) >= 2000);
});

test('usage errors exit 2 with a message', () => {
  const r = run(['frobnicate']);
  assert.equal(r.status, 2);
  assert.match(r.stderr, /unknown command/);
  assert.equal(run(['evaluate']).status, 2);
  assert.equal(run(['count', 'samples', '--threads', 'abc']).status, 2);
  const wb = run(['count', 'samples', '--white-balance', 'maybe']);
  assert.equal(wb.status, 2);
  assert.match(wb.stderr, /--white-balance must be on or off, not 'maybe'/);
  // a mistyped path alone is nothing to count: named, no table
  const typo = run(['count', 'samples/BloodImage_0004.jpg']);
  assert.equal(typo.status, 2);
  assert.match(typo.stderr, /no such file, folder or matching glob: samples\/BloodImage_0004\.jpg/);
  assert.doesNotMatch(typo.stdout, /TOTAL/);
  const info = run(['info', '--model', 'samples/BloodImage_00004.jpg']);
  assert.equal(info.status, 1);
  assert.match(info.stderr, /BloodImage_00004\.jpg: not an ONNX model/);
});

test('a 6000x4000 smear is counted in tiles with peak memory under 1 GB', async () => {
  const file = await makeLargeSmear(6000, 4000, join(tmp(), 'large.jpg'));
  const r = spawnSync(process.execPath, [join(ROOT, 'dist', 'bench', 'large.js'), '--one', file, String(TILE_SIZE), String(TILE_OVERLAP)], {
    encoding: 'utf8',
  });
  assert.equal(r.status, 0, r.stderr);
  const m = JSON.parse(r.stdout.trim().split('\n').pop()!);
  assert.deepEqual([m.width, m.height], [6000, 4000]);
  assert.equal(m.tiles, planTiles(6000, 4000, TILE_SIZE, TILE_OVERLAP, 128).length);
  assert.ok(m.maxRssMB < 1024, `peak RSS ${m.maxRssMB} MB`);
  assert.ok(m.counts.WBC >= 70, `about one WBC per 640x480 field: ${m.counts.WBC}`);
});

test('evaluate: a cell marked difficult (undecided) is no truth, and a detection on it is no false detection', () => {
  const xml = readFileSync(join(SAMPLES, 'truth', 'BloodImage_00004.xml'), 'utf8');
  // the first red cell: undecided in one copy, deleted in another
  const first = /<object>\s*<name>RBC<\/name>[\s\S]*?<\/object>\s*/.exec(xml)!;
  const variants = {
    labelled: xml,
    undecided: xml.replace(first[0], first[0].replace(/<difficult>0<\/difficult>/, '<difficult>1</difficult>')),
    deleted: xml.replace(first[0], ''),
  };
  const at = Object.fromEntries(
    Object.entries(variants).map(([k, text]) => {
      const dir = tmp();
      copyFileSync(join(SAMPLES, 'BloodImage_00004.jpg'), join(dir, 'BloodImage_00004.jpg'));
      writeFileSync(join(dir, 'BloodImage_00004.xml'), text);
      const r = run(['evaluate', '--data', dir, '--json', '-', '--quiet']);
      assert.equal(r.status, 0, r.stderr);
      if (k === 'undecided') assert.match(r.stderr, /BloodImage_00004\.xml: 1 object\(s\) marked difficult \(undecided\)/);
      return [k, JSON.parse(r.stdout).atModel.RBC as { truth: number; tp: number; fp: number }];
    }),
  ) as Record<keyof typeof variants, { truth: number; tp: number; fp: number }>;
  assert.equal(at.undecided.truth, at.labelled.truth - 1);
  assert.equal(at.labelled.tp - at.undecided.tp, 1, 'the model finds that cell');
  assert.equal(at.undecided.fp, at.labelled.fp);
  assert.equal(at.deleted.fp, at.labelled.fp + 1, 'deleted, the same detection is a false one');
});

test('evaluate reports each subset of a COCO set on its own, and --subset restricts to one', () => {
  const dir = tmp();
  const names = ['BloodImage_00004', 'BloodImage_00011', 'BloodImage_00017'];
  const doc = {
    categories: [
      { id: 1, name: 'RBC' },
      { id: 2, name: 'WBC' },
      { id: 3, name: 'Platelets' },
    ],
    images: [] as object[],
    annotations: [] as object[],
  };
  names.forEach((n, i) => {
    const voc = parseVoc(readFileSync(join(SAMPLES, 'truth', `${n}.xml`), 'utf8'));
    doc.images.push({ id: i + 1, file_name: join(SAMPLES, `${n}.jpg`), width: 640, height: 480, subset: i === 0 ? 'full-field' : 'other' });
    for (const b of voc.boxes)
      doc.annotations.push({
        id: doc.annotations.length + 1,
        image_id: i + 1,
        category_id: ['RBC', 'WBC', 'Platelets'].indexOf(b.label) + 1,
        bbox: [b.box[0], b.box[1], b.box[2] - b.box[0], b.box[3] - b.box[1]],
      });
  });
  writeFileSync(join(dir, 'set.json'), JSON.stringify(doc));
  const r = run(['evaluate', '--data', join(dir, 'set.json'), '--json', '-', '--quiet']);
  assert.equal(r.status, 0, r.stderr);
  const rep = JSON.parse(r.stdout);
  assert.deepEqual(Object.keys(rep.subsets), ['full-field', 'other']);
  assert.equal(rep.subsets['full-field'].evaluation.images, 1);
  assert.equal(rep.subsets.other.evaluation.images, 2);
  assert.equal(rep.evaluation.images, 3);
  assert.ok(rep.errors.RBC.missed >= rep.errors.RBC.missedAtBorder);
  const text = run(['evaluate', '--data', join(dir, 'set.json'), '--quiet']);
  assert.match(text.stdout, /Subset 'full-field'/);
  assert.match(text.stdout, /errors\s+missed\s+at border/);
  const one = run(['evaluate', '--data', join(dir, 'set.json'), '--subset', 'other', '--json', '-', '--quiet']);
  assert.equal(JSON.parse(one.stdout).evaluation.images, 2);
  // a subset the file does not have is a usage error that names the ones it has
  const none = run(['evaluate', '--data', join(dir, 'set.json'), '--subset', 'close-up', '--quiet']);
  assert.equal(none.status, 2);
  assert.match(none.stderr, /--subset close-up: .*set\.json has the subsets full-field, other/);
  // images of the subset that are not where the file says are named, not "no image of subset"
  doc.images.push({ id: 9, file_name: join(dir, 'gone.jpg'), width: 640, height: 480, subset: 'far' });
  writeFileSync(join(dir, 'set.json'), JSON.stringify(doc));
  const gone = run(['evaluate', '--data', join(dir, 'set.json'), '--subset', 'far', '--quiet']);
  assert.equal(gone.status, 1);
  assert.match(gone.stderr, /gone\.jpg: no such file \(listed in .*set\.json, subset far\)/);
  assert.match(gone.stderr, /none of the 1 annotated image\(s\) of subset 'far' could be read \(1 missing: are the images where set\.json says\?/);
  assert.equal(run(['evaluate', '--data', join(dir, 'set.json'), '--subset', 'other', '--quiet']).status, 0, 'the other subset is unaffected');
});

test('the table tells apart images that share a file name by their paths', () => {
  const dir = tmp();
  for (const [d, f] of [
    ['A', 'BloodImage_00004'],
    ['B', 'BloodImage_00011'],
  ] as const) {
    mkdirSync(join(dir, d));
    copyFileSync(join(SAMPLES, `${f}.jpg`), join(dir, d, 'x.jpg'));
  }
  copyFileSync(join(SAMPLES, 'BloodImage_00017.jpg'), join(dir, 'A', 'y.jpg'));
  const r = run(['count', join(dir, 'A'), join(dir, 'B')]);
  assert.equal(r.status, 0, r.stderr);
  const names = r.stdout.split('\n').map((l) => l.split(/\s+/)[0]);
  assert.ok(names.some((n) => n?.endsWith(join('A', 'x.jpg'))) && names.some((n) => n?.endsWith(join('B', 'x.jpg'))), r.stdout);
  assert.ok(names.includes('y.jpg'), 'a name of its own stays short');
});

test('an unknown option is a usage error that says so plainly and points to the help', () => {
  const r = run(['count', 'samples', '--bogus']);
  assert.equal(r.status, 2);
  assert.match(r.stderr, /unknown option '--bogus' \(hemocount count --help lists the options\)/);
});

test('--scale: the factor used is reported per image; a bad value is a usage error', () => {
  const r = run(['count', 'samples/BloodImage_00004.jpg', '--scale', '1.5', '--json', '-']);
  assert.equal(r.status, 0, r.stderr);
  assert.equal(JSON.parse(r.stdout).images[0].scale, 1.5);
  const t = run(['count', 'samples/BloodImage_00004.jpg']);
  assert.match(t.stdout, /scale/);
  assert.match(t.stdout, /BloodImage_00004\.jpg.*\s1x/);
  const bad = run(['count', 'samples', '--scale', '0,5']);
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /--scale must be 'auto' or a number/);
});

test('evaluate and calibrate fail when annotated images cannot be read, naming them; --skip-missing scores the rest', () => {
  const dir = tmp();
  for (const n of ['BloodImage_00004', 'BloodImage_00011']) copyFileSync(join(SAMPLES, 'truth', `${n}.xml`), join(dir, `${n}.xml`));
  copyFileSync(join(SAMPLES, 'BloodImage_00004.jpg'), join(dir, 'BloodImage_00004.jpg'));
  const r = run(['evaluate', '--data', dir, '--quiet']);
  assert.equal(r.status, 1);
  assert.match(r.stderr, /BloodImage_00011\.xml: image 'BloodImage_00011\.jpg' not found/);
  assert.match(r.stderr, /1 of 2 annotated image\(s\) could not be read/);
  const skip = run(['evaluate', '--data', dir, '--quiet', '--skip-missing', '--json', '-']);
  assert.equal(skip.status, 0, skip.stderr);
  assert.equal(JSON.parse(skip.stdout).evaluation.images, 1);
  // a COCO file whose only image is missing writes no model
  writeFileSync(
    join(dir, 'gone.json'),
    JSON.stringify({ categories: [{ id: 1, name: 'RBC' }], images: [{ id: 1, file_name: 'nope.jpg', width: 640, height: 480 }], annotations: [] }),
  );
  const out = join(dir, 'cal.onnx');
  const c = run(['calibrate', '--data', join(dir, 'gone.json'), '--out', out, '--quiet']);
  assert.equal(c.status, 1);
  assert.match(c.stderr, /nope\.jpg: no such file/);
  assert.ok(!existsSync(out));
  // too few cells to calibrate on
  const few = run(['calibrate', '--data', dir, '--skip-missing', '--out', out, '--quiet']);
  assert.equal(few.status, 1);
  assert.match(few.stderr, /only \d+ (WBC|Platelets) cell\(s\) annotated; calibration needs at least 10/);
  assert.ok(!existsSync(out));
});

test('a VOC <filename> cannot lead evaluate out of the dataset folder', () => {
  const dir = tmp();
  const xml = readFileSync(join(SAMPLES, 'truth', 'BloodImage_00004.xml'), 'utf8').replace(
    /<filename>[^<]*<\/filename>/,
    '<filename>../../../../etc/passwd</filename>',
  );
  writeFileSync(join(dir, 'BloodImage_00004.xml'), xml);
  copyFileSync(join(SAMPLES, 'BloodImage_00004.jpg'), join(dir, 'BloodImage_00004.jpg'));
  const r = run(['evaluate', '--data', dir, '--json', '-', '--quiet']);
  assert.equal(r.status, 0, r.stderr);
  assert.equal(JSON.parse(r.stdout).evaluation.images, 1);
  assert.doesNotMatch(r.stderr, /passwd/);
});

test('outputs never replace a file hemocount did not write, nor one changed since; --overwrite does', () => {
  const dir = tmp();
  const voc = join(dir, 'voc');
  mkdirSync(voc);
  const expert = readFileSync(join(SAMPLES, 'truth', 'BloodImage_00004.xml'), 'utf8');
  writeFileSync(join(voc, 'BloodImage_00004.xml'), expert);
  const r = run(['count', 'samples/BloodImage_00004.jpg', 'samples/BloodImage_00011.jpg', '--voc', voc, '--quiet']);
  assert.equal(r.status, 2);
  assert.match(r.stderr, /BloodImage_00004\.xml: exists and was not written by hemocount/);
  assert.equal(readFileSync(join(voc, 'BloodImage_00004.xml'), 'utf8'), expert);
  assert.ok(!existsSync(join(voc, 'BloodImage_00011.xml')), 'refused before counting anything');
  // hemocount may re-write its own, unchanged outputs
  const out = join(dir, 'out');
  assert.equal(run(['count', 'samples/BloodImage_00011.jpg', '--voc', out, '--json', join(out, 'r.json'), '--quiet']).status, 0);
  assert.equal(run(['count', 'samples/BloodImage_00011.jpg', '--voc', out, '--json', join(out, 'r.json'), '--quiet']).status, 0);
  // ... but not once a person corrected them
  writeFileSync(join(out, 'BloodImage_00011.xml'), readFileSync(join(out, 'BloodImage_00011.xml'), 'utf8').replace('<name>RBC</name>', '<name>WBC</name>'));
  const again = run(['count', 'samples/BloodImage_00011.jpg', '--voc', out, '--quiet']);
  assert.equal(again.status, 2);
  assert.match(again.stderr, /was not written by hemocount \(or was changed since\)/);
  assert.equal(run(['count', 'samples/BloodImage_00011.jpg', '--voc', out, '--quiet', '--overwrite']).status, 0);
});

test('a FIFO, a spliced JPEG and an SVG among the inputs: noted or reported, the rest counted', () => {
  const dir = tmp();
  copyFileSync(join(SAMPLES, 'BloodImage_00004.jpg'), join(dir, 'good.jpg'));
  assert.equal(spawnSync('mkfifo', [join(dir, 'pipe.jpg')]).status, 0);
  const a = readFileSync(join(SAMPLES, 'BloodImage_00004.jpg'));
  const b = readFileSync(join(SAMPLES, 'BloodImage_00017.jpg'));
  writeFileSync(join(dir, 'spliced.jpg'), Buffer.concat([a.subarray(0, a.length >> 1), b.subarray(b.length >> 1)]));
  writeFileSync(
    join(dir, 'drawing.png'),
    '<svg xmlns="http://www.w3.org/2000/svg" width="640" height="480"><circle cx="320" cy="240" r="100" fill="purple"/></svg>',
  );
  const r = run(['count', dir, '--json', '-', '--quiet'], {});
  assert.equal(r.status, 1, r.stderr);
  assert.match(r.stderr, /pipe\.jpg: a FIFO, not an image file: skipped/);
  const doc = JSON.parse(r.stdout);
  const by = (n: string) => doc.images.find((i: { file: string }) => i.file.endsWith(n));
  assert.ok(!by('good.jpg').error && by('good.jpg').counts.WBC === 1);
  assert.match(by('spliced.jpg').error, /corrupt/);
  assert.match(by('drawing.png').error, /not an image in a format hemocount reads/);
  assert.equal(doc.images.length, 3);
});

test('count --coco from relative inputs is read back by evaluate', () => {
  const dir = tmp();
  const r = run(['count', 'samples/BloodImage_00004.jpg', '--coco', join(dir, 'sub', 'dets.json'), '--quiet']);
  assert.equal(r.status, 0, r.stderr);
  const e = run(['evaluate', '--data', join(dir, 'sub', 'dets.json'), '--json', '-', '--quiet']);
  assert.equal(e.status, 0, e.stderr);
  const rep = JSON.parse(e.stdout);
  assert.equal(rep.evaluation.images, 1);
  // the detections scored against themselves: every counted cell matches
  assert.equal(rep.atModel.WBC.f1, 1);
});

test('a model file with broken metadata fails with its name and the problem, exit 1', async () => {
  const { withMetadata } = await import('../src/adapters/onnx.js');
  const dir = tmp();
  const bytes = new Uint8Array(readFileSync(join(ROOT, 'models', 'hemocount-default.onnx')));
  const meta = readMetadata(bytes);
  const broken = { ...meta, thresholds: { WBC: 0.5 } } as unknown as typeof meta;
  writeFileSync(join(dir, 'bad.onnx'), withMetadata(bytes, broken));
  const r = run(['count', 'samples/BloodImage_00004.jpg', '--model', join(dir, 'bad.onnx')]);
  assert.equal(r.status, 1);
  assert.match(r.stderr, /bad\.onnx: unusable hemocount metadata: thresholds\.RBC must be a number from 0 to 1/);
  writeFileSync(join(dir, 'future.onnx'), withMetadata(bytes, { ...meta, format: 'hemocount-retinanet/9' }));
  assert.match(run(['info', '--model', join(dir, 'future.onnx')]).stderr, /format 'hemocount-retinanet\/9' is not hemocount-retinanet\/1, \/2 or \/3/);
  // planar outputs labelled format 1 (which builds before format 2 would decode as interleaved)
  writeFileSync(join(dir, 'mislabelled.onnx'), withMetadata(bytes, { ...meta, format: 'hemocount-retinanet/1' }));
  assert.match(
    run(['info', '--model', join(dir, 'mislabelled.onnx')]).stderr,
    /outputs\.layout 'planar' is not one this hemocount reads with format hemocount-retinanet\/1/,
  );
  // the int8 model's 8-bit image input labelled format 2 (which builds before format 3 would feed floats)
  const q = new Uint8Array(readFileSync(join(ROOT, 'models', 'hemocount-default.int8.onnx')));
  writeFileSync(join(dir, 'int8-as-2.onnx'), withMetadata(q, { ...readMetadata(q), format: 'hemocount-retinanet/2' }));
  assert.match(
    run(['info', '--model', join(dir, 'int8-as-2.onnx')]).stderr,
    /input 'NHWC uint8' is not one this hemocount feeds with format hemocount-retinanet\/2/,
  );
  // metadata that promises a float input to a graph that takes 8 bits: the model is named, not only the image
  const { dtype: _, ...floatInput } = readMetadata(q).input;
  writeFileSync(
    join(dir, 'int8-as-float.onnx'),
    withMetadata(q, { ...readMetadata(q), format: 'hemocount-retinanet/2', input: { ...floatInput, layout: 'NCHW' } }),
  );
  const mis = run(['count', 'samples/BloodImage_00004.jpg', '--model', join(dir, 'int8-as-float.onnx')]);
  assert.equal(mis.status, 1);
  assert.match(mis.stdout + mis.stderr, /int8-as-float\.onnx: its metadata's input \(NCHW float32\) is not what its graph takes/);
});

test('a batch killed mid-way keeps its work in --jsonl, and --resume counts only the rest', async () => {
  const dir = tmp();
  const inp = join(dir, 'in');
  mkdirSync(inp);
  for (let i = 0; i < 16; i++)
    copyFileSync(join(SAMPLES, i % 2 ? 'BloodImage_00011.jpg' : 'BloodImage_00004.jpg'), join(inp, `f${String(i).padStart(2, '0')}.jpg`));
  const jl = join(dir, 'r.jsonl');
  const { spawn } = await import('node:child_process');
  const p = spawn(process.execPath, [CLI, 'count', inp, '--jsonl', jl, '--quiet'], { cwd: ROOT });
  const lines = () => (existsSync(jl) ? readFileSync(jl, 'utf8').split('\n').filter(Boolean).length : 0);
  for (let t = 0; t < 600 && lines() < 3; t++) await new Promise((r) => setTimeout(r, 25));
  p.kill('SIGKILL');
  await new Promise((r) => p.on('exit', r));
  const kept = lines();
  assert.ok(kept >= 3 && kept < 16, `killed after ${kept} images`);
  // mark a kept result: if it came back unchanged, it was not counted again
  const [firstLine, ...rest] = readFileSync(jl, 'utf8').split('\n').filter(Boolean);
  assert.ok(firstLine);
  const first = JSON.parse(firstLine);
  first.counts.RBC = 999;
  writeFileSync(jl, [JSON.stringify(first), ...rest].join('\n') + '\n{"file": "half a li');
  // without --resume the interrupted file is not replaced
  assert.equal(run(['count', inp, '--jsonl', jl, '--quiet']).status, 2);
  // nor resumed with other settings: its results would be passed off as counted with them
  const before = readFileSync(jl, 'utf8');
  for (const other of [
    ['--threshold', '0.3'],
    ['--model', 'fp32'],
  ]) {
    const bad = run(['count', inp, '--jsonl', jl, '--resume', '--quiet', ...other]);
    assert.equal(bad.status, 2, other.join(' '));
    assert.match(bad.stderr, /was counted with model \w+, thresholds RBC=[\d.]+.*this run counts with/, other.join(' '));
  }
  assert.equal(readFileSync(jl, 'utf8'), before);
  const r = run(['count', inp, '--jsonl', jl, '--resume', '--json', join(dir, 'r.json'), '--quiet']);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stderr, /line \d+ is incomplete/);
  const doc = JSON.parse(readFileSync(join(dir, 'r.json'), 'utf8'));
  assert.equal(doc.images.length, 16);
  assert.equal(new Set(doc.images.map((i: { file: string }) => i.file)).size, 16);
  assert.equal(doc.images.find((i: { file: string }) => i.file === first.file).counts.RBC, 999);
  assert.equal(doc.images.filter((i: { counts: { RBC: number } }) => i.counts.RBC === 999).length, 1);
  // the JSON Lines file now holds every image once, on lines of their own
  const parsed = readFileSync(jl, 'utf8')
    .split('\n')
    .filter(Boolean)
    .flatMap((l) => {
      try {
        return [JSON.parse(l)];
      } catch {
        return [];
      }
    });
  assert.equal(parsed.length, 16);
});

test('the CLI refuses an image above its pixel cap from the header, at once', () => {
  const dir = tmp();
  writeFileSync(join(dir, 'huge.png'), pngHeaderOnly(30000, 30000));
  const t = Date.now();
  const r = run(['count', join(dir, 'huge.png'), 'samples/BloodImage_00004.jpg', '--json', '-', '--quiet']);
  assert.equal(r.status, 1);
  assert.ok(Date.now() - t < 30_000);
  const doc = JSON.parse(r.stdout);
  assert.match(
    doc.images.find((i: { file: string }) => i.file.endsWith('huge.png')).error,
    /30000 x 30000 is 900 megapixels, above the limit of 250 \(maxPixels; --max-megapixels on the command line\)/,
  );
  assert.equal(doc.totals.images, 1);
});

test('an output folder that cannot be made is a usage error before counting; a broken link is reported, the rest counted', () => {
  const t = Date.now();
  const r = run(['count', 'samples/BloodImage_00004.jpg', '--json', '/proc/nope/r.json', '--quiet']);
  assert.equal(r.status, 2);
  assert.match(r.stderr, /\/proc\/nope: cannot create this folder/);
  assert.ok(Date.now() - t < 20_000);
  const dir = tmp();
  copyFileSync(join(SAMPLES, 'BloodImage_00004.jpg'), join(dir, 'a.jpg'));
  symlinkSync(join(dir, 'gone.jpg'), join(dir, 'link.jpg'));
  const c = run(['count', dir, '--json', '-', '--quiet']);
  assert.equal(c.status, 1);
  const doc = JSON.parse(c.stdout);
  assert.match(doc.images.find((i: { file: string }) => i.file.endsWith('link.jpg')).error, /broken symbolic link/);
  assert.equal(doc.totals.images, 1);
});

test('habits: every command answers --help with its own options; - is stdout for every output; info is readable', () => {
  for (const cmd of ['count', 'evaluate', 'calibrate', 'select', 'report', 'serve', 'info']) {
    const r = run([cmd, '--help']);
    assert.equal(r.status, 0, cmd);
    assert.match(r.stdout, new RegExp(`Usage: hemocount ${cmd}`), cmd);
  }
  assert.match(run(['serve', '--help']).stdout, /--token SECRET/);
  assert.doesNotMatch(run(['serve', '--help']).stdout, /--threshold SPEC/);
  const csv = run(['count', 'samples/BloodImage_00004.jpg', '--csv', '-']);
  assert.equal(csv.status, 0, csv.stderr);
  assert.equal(parseCsv(csv.stdout)[0]?.[0], 'file');
  assert.match(csv.stderr, /TOTAL/, 'the table moves to stderr');
  assert.ok(!existsSync(join(ROOT, '-')), 'no file named -');
  const coco = run(['count', 'samples/BloodImage_00004.jpg', '--coco', '-', '--quiet']);
  assert.equal(parseCoco(coco.stdout).images.length, 1);
  const jl = run(['count', 'samples/BloodImage_00004.jpg', 'samples/BloodImage_00011.jpg', '--jsonl', '-', '--quiet']);
  assert.equal(
    jl.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l)).length,
    2,
  );
  // lines captured from stdout record their settings too: a later run resumes from them
  const saved = join(tmp(), 'captured.jsonl');
  writeFileSync(saved, jl.stdout);
  const resumed = run(['count', 'samples/BloodImage_00004.jpg', 'samples/BloodImage_00011.jpg', '--jsonl', saved, '--resume', '--json', '-', '--quiet']);
  assert.equal(resumed.status, 0, resumed.stderr);
  assert.equal(JSON.parse(resumed.stdout).images.length, 2);
  assert.equal(run(['count', 'samples', '--json', '-', '--csv', '-']).status, 2);
  const info = run(['info']);
  assert.equal(info.status, 0);
  assert.match(info.stdout, /RBC threshold 0\.\d\d/);
  assert.match(info.stdout, /parameters/);
  assert.equal(JSON.parse(run(['info', '--json']).stdout).format, 'hemocount-retinanet/3'); // the int8 model's 8-bit input
});

test('evaluate --split val scores only labels/val of a YOLO set given by its data.yaml; a missing split is named', () => {
  const dir = tmp();
  const names = ['BloodImage_00004', 'BloodImage_00011', 'BloodImage_00017'];
  for (const [k, n] of names.entries()) {
    const split = k < 2 ? 'train' : 'val';
    mkdirSync(join(dir, 'images', split), { recursive: true });
    mkdirSync(join(dir, 'labels', split), { recursive: true });
    copyFileSync(join(SAMPLES, `${n}.jpg`), join(dir, 'images', split, `${n}.jpg`));
    const voc = parseVoc(readFileSync(join(SAMPLES, 'truth', `${n}.xml`), 'utf8'));
    writeFileSync(join(dir, 'labels', split, `${n}.txt`), toYolo(voc.width!, voc.height!, voc.boxes));
  }
  writeFileSync(join(dir, 'data.yaml'), 'path: .\ntrain: images/train\nval: images/val\nnames: [RBC, WBC, Platelets]\n');
  const r = run(['evaluate', '--data', join(dir, 'data.yaml'), '--split', 'val', '--json', '-', '--quiet']);
  assert.equal(r.status, 0, r.stderr);
  assert.equal(JSON.parse(r.stdout).evaluation.images, 1);
  assert.match(JSON.parse(r.stdout).data, /data\.yaml \(set val\)$/, 'the report names the set it scored');
  const all = run(['evaluate', '--data', dir, '--json', '-', '--quiet']);
  assert.equal(JSON.parse(all.stdout).evaluation.images, 3);
  const bad = run(['evaluate', '--data', join(dir, 'data.yaml'), '--split', 'test']);
  assert.equal(bad.status, 1);
  assert.match(bad.stderr, /data\.yaml names no set 'test'; its sets: train, val/);
  // Roboflow's export: train/images + train/labels, valid/..., and a data.yaml whose '../' paths Ultralytics forgives
  const rf = tmp();
  for (const [k, n] of names.entries()) {
    const set = k < 2 ? 'train' : 'valid';
    for (const d of ['images', 'labels']) mkdirSync(join(rf, set, d), { recursive: true });
    copyFileSync(join(dir, 'images', k < 2 ? 'train' : 'val', `${n}.jpg`), join(rf, set, 'images', `${n}.jpg`));
    copyFileSync(join(dir, 'labels', k < 2 ? 'train' : 'val', `${n}.txt`), join(rf, set, 'labels', `${n}.txt`));
  }
  writeFileSync(join(rf, 'data.yaml'), "train: ../train/images\nval: ../valid/images\n\nnc: 3\nnames: ['RBC', 'WBC', 'Platelets']\n");
  const val = run(['evaluate', '--data', join(rf, 'data.yaml'), '--split', 'val', '--json', '-', '--quiet']);
  assert.equal(val.status, 0, val.stderr);
  const v = JSON.parse(val.stdout).evaluation;
  assert.equal(v.images, 1);
  assert.ok(v.classes.RBC.sweep[0].tp > 5);
  assert.deepEqual(v.classes, JSON.parse(r.stdout).evaluation.classes, 'the same image and labels as the Ultralytics layout');
  assert.equal(JSON.parse(run(['evaluate', '--data', rf, '--json', '-', '--quiet']).stdout).evaluation.images, 3);
  // any yaml name (Ultralytics' own are coco8.yaml and the like); a set whose folder is not there is named
  writeFileSync(join(rf, 'blood.yaml'), "train: ../train/images\nval: ../validation/images\nnames: ['RBC', 'WBC', 'Platelets']\n");
  const typo = run(['evaluate', '--data', join(rf, 'blood.yaml'), '--split', 'val']);
  assert.equal(typo.status, 1);
  assert.match(typo.stderr, /blood\.yaml's val set: no labels at \S*validation\/labels/);
  const trainOnly = run(['evaluate', '--data', join(rf, 'blood.yaml'), '--split', 'train', '--json', '-', '--quiet']);
  assert.equal(JSON.parse(trainOnly.stdout).evaluation.images, 2);
  // --split on data that has no sets is refused, not ignored
  const voc = run(['evaluate', '--data', 'samples', '--split', 'val']);
  assert.equal(voc.status, 1);
  assert.match(voc.stderr, /--split picks one set of a YOLO folder/);
});

test('--out-format jpg|webp writes annotated pictures in that format; re-counting the folder skips them', async () => {
  const dir = tmp();
  for (const f of ['jpg', 'webp']) {
    const r = run(['count', join(SAMPLES, 'BloodImage_00004.jpg'), '--out', dir, '--out-format', f, '--quiet']);
    assert.equal(r.status, 0, r.stderr);
    const m = await sharp(join(dir, `BloodImage_00004.annotated.${f}`)).metadata();
    assert.equal(m.format, f === 'jpg' ? 'jpeg' : 'webp');
    assert.equal(m.width, 640);
  }
  assert.equal(run(['count', dir, '--quiet']).status, 2); // nothing but hemocount's own pictures
  assert.match(run(['count', SAMPLES, '--out-format', 'gif']).stderr, /--out-format must be png, jpg or webp, not 'gif'/);
});

test('--jobs 3 (worker threads) counts the same images in the same order as --jobs 1, reports a corrupt one, and the ledger records every picture', () => {
  const [d1, d3] = [tmp(), tmp()];
  const data = join(tmp(), 'batch');
  mkdirSync(data);
  for (const f of readdirSync(SAMPLES).filter((f) => f.endsWith('.jpg'))) copyFileSync(join(SAMPLES, f), join(data, f));
  const jpg = readFileSync(join(SAMPLES, 'BloodImage_00011.jpg'));
  writeFileSync(join(data, 'BloodImage_00012_truncated.jpg'), jpg.subarray(0, Math.floor(jpg.length / 2)));
  const one = run(['count', data, '--jobs', '1', '--json', '-', '--out', d1, '--quiet']);
  const three = run(['count', data, '--jobs', '3', '--json', '-', '--out', d3, '--quiet']);
  assert.equal(three.status, 1, three.stderr);
  assert.match(three.stderr, /BloodImage_00012_truncated\.jpg: .*(corrupt|truncated|premature)/i);
  const pick = (s: string) =>
    // the error's kind: the decoder's own words in brackets may differ between threads
    JSON.parse(s).images.map((i: { file: string; counts: unknown; error?: string }) => [i.file, i.counts, i.error?.replace(/ \(.*\)$/, '')]);
  assert.deepEqual(pick(three.stdout), pick(one.stdout));
  // the same boxes to the pixel: the workers run the same model on the same pixels
  const boxes = (s: string) => JSON.parse(s).images.map((i: { detections?: { box: number[] }[] }) => i.detections?.map((d) => d.box));
  assert.deepEqual(boxes(three.stdout), boxes(one.stdout));
  const ledger = JSON.parse(readFileSync(join(d3, '.hemocount-outputs.json'), 'utf8'));
  assert.deepEqual(
    Object.keys(ledger).sort(),
    readdirSync(d3)
      .filter((f) => f.endsWith('.annotated.png'))
      .sort(),
  );
  assert.equal(Object.keys(ledger).length, 5);
});

test("Ctrl-C while workers write large images' decoded copies leaves none behind", async () => {
  const dir = tmp();
  const [scratch, set, made] = [join(dir, 'scratch'), join(dir, 'set'), join(dir, 'made')] as const;
  for (const d of [scratch, set, made]) mkdirSync(d);
  // above 2048 x 2048: each is decoded once into the temporary folder, by one of two workers
  for (const n of ['a', 'b']) copyFileSync(await makeLargeSmear(2600, 2000, join(made, `${n}.jpg`)), join(set, `${n}.jpg`));
  if ((await statfs(scratch)).type === 0x01021994) return; // a RAM-backed folder gets no copy to leave
  const p = spawn(process.execPath, [CLI, 'count', set, '--jobs', '2', '--quiet', '--json', join(dir, 'r.json')], {
    env: { ...process.env, TMPDIR: scratch },
    stdio: 'ignore',
  });
  const exited = once(p, 'exit');
  const writing = () => readdirSync(scratch).some((n) => n.startsWith('hemocount-v'));
  const t0 = Date.now();
  while (!writing() && p.exitCode === null && Date.now() - t0 < 60_000) await new Promise((r) => setTimeout(r, 5));
  assert.ok(writing(), 'a decoded copy was being written');
  p.kill('SIGINT');
  const [code, signal] = await exited;
  assert.equal(signal, 'SIGINT', `stopped as the signal stops it (exit ${code})`);
  assert.deepEqual(readdirSync(scratch), [], 'no copy left');
});

test('scoring a model on the images it was trained on warns; other images do not', () => {
  const dir = tmp();
  const lab = join(dir, 'lab');
  mkdirSync(lab);
  for (const f of ['BloodImage_00004.jpg', 'BloodImage_00011.jpg']) copyFileSync(join(SAMPLES, f), join(lab, f));
  for (const f of ['BloodImage_00004.xml', 'BloodImage_00011.xml']) copyFileSync(join(SAMPLES, 'truth', f), join(lab, f));
  // the bundled model, as if a lab had trained it on `lab` (hemocount train records the data's absolute path)
  const bytes = readFileSync(join(ROOT, 'models', 'hemocount-default.onnx'));
  const meta = readMetadata(bytes);
  const mine = join(dir, 'mine.onnx');
  writeFileSync(mine, withMetadata(bytes, { ...meta, provenance: { ...(meta.provenance as object), config: { data: lab } } }));
  const warning = /warning: .*lab is what this model was trained on: its scores there say how well it fits those images, not how it counts new smears/;
  const own = run(['evaluate', '--data', lab, '--model', mine, '--quiet']);
  assert.equal(own.status, 0, own.stderr);
  assert.match(own.stderr, warning);
  const other = run(['evaluate', '--data', SAMPLES, '--model', mine, '--quiet']);
  assert.equal(other.status, 0, other.stderr);
  assert.doesNotMatch(other.stderr, warning);
});

test('a reader that closes the pipe early (| head) ends the count quietly; the other outputs are still written', async () => {
  const dir = tmp();
  const child = spawn(process.execPath, [CLI, 'count', 'samples', '--json', '-', '--quiet', '--out', join(dir, 'pics')], { cwd: ROOT });
  let stderr = '';
  child.stderr.on('data', (d) => {
    stderr += d;
  });
  // close our end before the results come, as a `head` that has read enough does
  child.stdout.destroy();
  const [code] = await once(child, 'exit');
  assert.equal(code, 0, stderr);
  assert.doesNotMatch(stderr, /EPIPE|Error/);
  assert.equal(readdirSync(join(dir, 'pics')).filter((f) => f.endsWith('.annotated.png')).length, 5);
});

test("--white-balance: the gains in the JSON and CSV; off is the bundled models' default, so a resume with or without the flag agrees", () => {
  const one = 'samples/BloodImage_00011.jpg';
  const on = run(['count', one, '--white-balance', 'on', '--json', '-', '--quiet']);
  assert.equal(on.status, 0, on.stderr);
  const gains = JSON.parse(on.stdout).images[0].whiteBalance;
  assert.ok(Array.isArray(gains) && gains.length === 3 && gains.every((g: number) => g > 0.9 && g < 1.1), `${gains}`);
  const csv = run(['count', one, '--white-balance', 'on', '--csv', '-', '--quiet']).stdout.trim().split('\n');
  const col = csv[0]!.split(',').indexOf('white_balance');
  assert.ok(col > 0);
  assert.equal(csv[1]!.split(',')[col], gains.join('/'));
  assert.equal(JSON.parse(run(['count', one, '--json', '-', '--quiet']).stdout).images[0].whiteBalance, undefined);
  assert.match(run(['info']).stdout, /white balance: off by default/);
  const jsonl = join(tmp(), 'run.jsonl');
  assert.equal(run(['count', one, '--jsonl', jsonl, '--white-balance', 'off', '--quiet']).status, 0);
  const resumed = run(['count', one, 'samples/BloodImage_00004.jpg', '--jsonl', jsonl, '--resume', '--quiet']);
  assert.equal(resumed.status, 0, resumed.stderr);
  const refused = run(['count', one, '--jsonl', jsonl, '--resume', '--white-balance', 'on', '--quiet']);
  assert.equal(refused.status, 2);
  assert.match(refused.stderr, /white balance on.*resume with the same model, thresholds, review, scale, tta, white balance and --candidates/s);
});
