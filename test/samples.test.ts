/** Samples: intervals and ratios checked against reference values; the CLI on sub-folders and a manifest. */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { parseCsv } from '../src/core/formats.js';
import { betaInc, gammaInc, meanSd, perThousand, poissonInterval, summariseSamples } from '../src/core/samples.js';
import { CLI, ROOT, SAMPLES, tmp } from './helpers.js';

const near = (a: number, b: number, tol: number, what: string) => assert.ok(Math.abs(a - b) <= tol, `${what}: ${a} vs ${b}`);

test('exact Poisson and binomial intervals match published tables', () => {
  // Garwood intervals (e.g. Ulm 1990; R's poisson.test)
  near(poissonInterval(0)[0], 0, 1e-12, 'n=0 low');
  near(poissonInterval(0)[1], 3.6889, 1e-4, 'n=0 high');
  near(poissonInterval(10)[0], 4.7954, 1e-4, 'n=10 low');
  near(poissonInterval(10)[1], 18.3904, 1e-4, 'n=10 high');
  near(poissonInterval(1000)[0], 938.97, 0.01, 'n=1000 low');
  near(poissonInterval(1000)[1], 1063.95, 0.01, 'n=1000 high');
  // regularised incomplete gamma and beta at known points
  near(gammaInc(3, 2), 0.3233235838, 1e-9, 'P(3,2)');
  near(betaInc(2, 3, 0.4), 0.5248, 1e-9, 'I_0.4(2,3)');
  // Clopper-Pearson 5 of 20 (R binom.test: 0.0866-0.4910) -> per 1000 of the other 15
  const r = perThousand(5, 15);
  near(r.value, 333.33, 0.01, 'ratio');
  near(r.ci95[0], (1000 * 0.08657) / (1 - 0.08657), 0.2, 'ratio low');
  near(r.ci95[1], (1000 * 0.49105) / (1 - 0.49105), 0.5, 'ratio high');
  assert.deepEqual(perThousand(0, 500).ci95[0], 0);
  assert.deepEqual(meanSd([2, 4, 6]), { mean: 4, sd: 2 });
});

test('a sample sums its counted fields; failed fields add nothing; estimates follow the given red-cell count', () => {
  const f = (file: string, sample: string | undefined, R: number, W: number, P: number, u = 0, error?: string) =>
    ({ file, sample, counts: { RBC: R, WBC: W, Platelets: P }, uncertain: { RBC: u, WBC: 0, Platelets: 0 }, ...(error && { error }) });
  const [a, b] = summariseSamples([f('1', 'A', 100, 1, 10, 2), f('2', 'A', 300, 3, 20), f('3', 'B', 50, 0, 5), f('4', 'A', 0, 0, 0, 0, 'corrupt'), f('5', undefined, 9, 9, 9)],
    { A: 5e6 });
  assert.equal(a.name, 'A');
  assert.deepEqual(a.counts, { RBC: 400, WBC: 4, Platelets: 30 });
  assert.equal(a.fields, 2);
  assert.equal(a.failed, 1);
  assert.equal(a.images.length, 3);
  assert.equal(a.fieldsToReview, 1);
  assert.equal(a.per1000RBC.Platelets!.value, 75);
  assert.equal(a.estimates!.Platelets!.value, 75 * 5e6 / 1000);
  assert.ok(a.estimates!.Platelets!.ci95[0] < 375000 && a.estimates!.Platelets!.ci95[1] > 375000);
  assert.equal(b.estimates, undefined);
  assert.equal(b.per1000RBC.WBC!.value, 0);
});

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
  const r = run(['count', slides, '--json', join(dir, 'c.json'), '--csv', join(dir, 'c.csv'), '--samples-csv', join(dir, 's.csv'),
    '--sample-report', join(dir, 'r.html'), '--rbc-count', 'patient-A=4.8e6']);
  assert.equal(r.status, 1, r.stderr); // the broken field
  assert.match(r.stderr, /sample patient-A: 2 field\(s\)/);
  const doc = JSON.parse(readFileSync(join(dir, 'c.json'), 'utf8'));
  assert.equal(doc.samples.length, 2);
  for (const s of doc.samples) {
    const fields = doc.images.filter((i: { sample?: string; error?: string }) => i.sample === s.name && !i.error);
    for (const c of ['RBC', 'WBC', 'Platelets']) {
      assert.equal(s.counts[c], fields.reduce((t: number, i: { counts: Record<string, number> }) => t + i.counts[c], 0), `${s.name} ${c}`);
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
  assert.equal(csv[1][csv[0].indexOf('RBC')], String(A.counts.RBC));
  assert.equal(parseCsv(readFileSync(join(dir, 'c.csv'), 'utf8'))[0][0], 'sample');
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
  assert.equal(JSON.parse(named.stdout).samples[0].name, 'P7');
});
