/** Samples through the CLI: sub-folders, a manifest, the sample CSV and report. */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { parseCsv } from '../src/core/formats.js';
import { CLASSES, type PerClass } from '../src/core/types.js';
import { CLI, ROOT, SAMPLES, tmp } from './helpers.js';

const run = (args: string[]) => spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', cwd: ROOT, maxBuffer: 64 << 20 });

test('count slides/ with two sub-folders gives two samples whose totals are the sums of their fields', () => {
  const dir = tmp();
  const slides = join(dir, 'slides');
  mkdirSync(join(slides, 'patient-A'), { recursive: true });
  mkdirSync(join(slides, 'patient-B'));
  for (const n of ['BloodImage_00004.jpg', 'BloodImage_00011.jpg']) copyFileSync(join(SAMPLES, n), join(slides, 'patient-A', n));
  for (const n of ['BloodImage_00017.jpg', '069e00b1-4852-5629-b1a7-b115562d6bd7.jpg']) copyFileSync(join(SAMPLES, n), join(slides, 'patient-B', n));
  writeFileSync(join(slides, 'patient-B', 'broken.jpg'), 'not a jpeg');
  copyFileSync(join(SAMPLES, 'BloodImage_00017.jpg'), join(slides, 'loose.jpg'));
  const r = run([
    'count',
    slides,
    '--json',
    join(dir, 'c.json'),
    '--csv',
    join(dir, 'c.csv'),
    '--samples-csv',
    join(dir, 's.csv'),
    '--sample-report',
    join(dir, 'r.html'),
    '--rbc-count',
    'patient-A=4.8e6',
  ]);
  assert.equal(r.status, 1, r.stderr); // the broken field
  assert.match(r.stderr, /sample patient-A: 2 field\(s\)/);
  const doc = JSON.parse(readFileSync(join(dir, 'c.json'), 'utf8'));
  assert.equal(doc.samples.length, 2);
  for (const s of doc.samples) {
    const fields = doc.images.filter((i: { sample?: string; error?: string }) => i.sample === s.name && !i.error);
    for (const c of CLASSES) {
      assert.equal(
        s.counts[c],
        fields.reduce((t: number, i: { counts: PerClass<number> }) => t + i.counts[c], 0),
        `${s.name} ${c}`,
      );
      assert.ok(s.ci95[c][0] <= s.counts[c] && s.counts[c] <= s.ci95[c][1]);
    }
  }
  const [A, B] = doc.samples;
  assert.equal(A.name, 'patient-A');
  assert.equal(B.failed, 1);
  assert.ok(A.estimates && !B.estimates);
  assert.equal(doc.images.find((i: { file: string }) => i.file.endsWith('loose.jpg')).sample, undefined);
  const csv = parseCsv(readFileSync(join(dir, 's.csv'), 'utf8'));
  assert.equal(csv.length, 3);
  const [head] = csv;
  assert.ok(head);
  assert.equal(csv[1]?.[head.indexOf('RBC')], String(A.counts.RBC));
  assert.equal(parseCsv(readFileSync(join(dir, 'c.csv'), 'utf8'))[0]?.[0], 'sample');
  const html = readFileSync(join(dir, 'r.html'), 'utf8');
  assert.match(html, /Sample patient-A/);
  assert.match(html, /ESTIMATE/);
  assert.equal((html.match(/<img src="data:image\/jpeg;base64,/g) ?? []).length, 4);
});

test('a manifest assigns samples and red-cell counts; its errors name the file and line', () => {
  const dir = tmp();
  for (const n of ['BloodImage_00004.jpg', 'BloodImage_00011.jpg']) copyFileSync(join(SAMPLES, n), join(dir, n));
  writeFileSync(join(dir, 'm.csv'), 'file,sample,rbc_count\nBloodImage_00004.jpg,S1,5e6\nBloodImage_00011.jpg,S1,5e6\n');
  const r = run(['count', '--samples', join(dir, 'm.csv'), '--json', '-', '--quiet']);
  assert.equal(r.status, 0, r.stderr);
  const doc = JSON.parse(r.stdout);
  assert.equal(doc.samples.length, 1);
  assert.equal(doc.samples[0].fields, 2);
  assert.equal(doc.samples[0].estimates.rbcPerUl, 5e6);
  writeFileSync(join(dir, 'bad.csv'), 'file,sample,rbc_count\nBloodImage_00004.jpg,S1,lots\n');
  const bad = run(['count', '--samples', join(dir, 'bad.csv')]);
  assert.equal(bad.status, 2);
  assert.match(bad.stderr, /bad\.csv: line 2: rbc_count 'lots'/);
  const two = run(['count', join(dir, 'BloodImage_00004.jpg'), '--rbc-count', '4.8e6']);
  assert.equal(two.status, 2);
  assert.match(two.stderr, /needs a sample/);
  const named = run(['count', join(dir, 'BloodImage_00004.jpg'), '--sample', 'P7', '--rbc-count', '4.8e6', '--json', '-', '--quiet']);
  assert.equal(named.status, 0, named.stderr);
  const p7 = JSON.parse(named.stdout).samples[0];
  assert.equal(p7.name, 'P7');
  // one field holds a few dozen red cells: no estimate per microlitre from that, and it says why
  assert.deepEqual([p7.estimates.WBC, p7.estimates.Platelets], [null, null]);
  assert.match(p7.estimates.note, /^not given: \d+ red cells counted, the ratio method needs at least 1000 \(about \d+ fields like these in all\)$/);
  // the analyser's 4.8 (x10^12/L) is not taken as 4.8 red cells per microlitre
  const unit = run(['count', join(dir, 'BloodImage_00004.jpg'), '--sample', 'P7', '--rbc-count', '4.8']);
  assert.equal(unit.status, 2);
  assert.match(unit.stderr, /--rbc-count: '4\.8' looks like x10\^12\/L .* give red cells per microlitre, e\.g\. 4\.8e6/);
  writeFileSync(join(dir, 'unit.csv'), 'file,sample,rbc_count\nBloodImage_00004.jpg,S1,4.8\n');
  assert.match(run(['count', '--samples', join(dir, 'unit.csv')]).stderr, /unit\.csv: line 2: rbc_count '4\.8' looks like x10\^12\/L/);
  // a listed field that is missing is a failed field of its sample
  const gone = run(['count', join(dir, 'BloodImage_00004.jpg'), join(dir, 'gone.jpg'), '--sample', 'P8', '--json', '-', '--quiet']);
  const p8 = JSON.parse(gone.stdout).samples[0];
  assert.deepEqual([p8.fields, p8.failed, p8.images.length], [1, 1, 2]);
});
