/** Samples: intervals and ratios checked against reference values, and the grouping of fields. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { betaInc, gammaInc, MIN_RATIO_RBC, meanSd, perThousand, poissonInterval, rbcCountProblem, summariseSamples } from '../../src/core/samples.js';

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
  const f = (file: string, sample: string | undefined, R: number, W: number, P: number, u = 0, error?: string) => ({
    file,
    sample,
    counts: { RBC: R, WBC: W, Platelets: P },
    uncertain: { RBC: u, WBC: 0, Platelets: 0 },
    ...(error && { error }),
  });
  const [a, b, c] = summariseSamples(
    [
      f('1', 'A', 400, 4, 40, 2),
      f('2', 'A', 800, 8, 50),
      f('3', 'B', 50, 0, 5),
      f('4', 'A', 0, 0, 0, 0, 'corrupt'),
      f('5', undefined, 9, 9, 9),
      f('6', 'C', 300, 3, 20),
    ],
    { A: 5e6, C: 5e6 },
  );
  assert.ok(a && b && c);
  assert.equal(a.name, 'A');
  assert.deepEqual(a.counts, { RBC: 1200, WBC: 12, Platelets: 90 });
  assert.equal(a.fields, 2);
  assert.equal(a.failed, 1);
  assert.equal(a.images.length, 3);
  assert.equal(a.fieldsToReview, 1);
  assert.equal(a.per1000RBC.Platelets!.value, 75);
  assert.equal(a.estimates!.Platelets!.value, (75 * 5e6) / 1000);
  assert.ok(a.estimates!.Platelets!.ci95[0] < 375000 && a.estimates!.Platelets!.ci95[1] > 375000);
  assert.equal(b.estimates, undefined);
  assert.equal(b.per1000RBC.WBC!.value, 0);
  // under MIN_RATIO_RBC red cells the ratios stand, the estimates per microlitre are not given
  assert.equal(c.per1000RBC.Platelets!.value, (20 / 300) * 1000);
  assert.deepEqual([c.estimates!.WBC, c.estimates!.Platelets], [null, null]);
  assert.equal(c.estimates!.note, `not given: 300 red cells counted, the ratio method needs at least ${MIN_RATIO_RBC} (about 4 fields like these in all)`);
});

test('an analyser red-cell count in x10^12/L, or outside human blood, is named as such', () => {
  assert.equal(rbcCountProblem(4.8e6), null);
  assert.match(rbcCountProblem(4.8)!, /^looks like x10\^12\/L .*give red cells per microlitre, e\.g\. 4\.8e6$/);
  assert.match(rbcCountProblem(4.8e12)!, /outside human blood/);
  assert.match(rbcCountProblem(-1)!, /not a positive number/);
});
