/**
 * This build against another build of hemocount, in one run: `hemocount count` with both
 * CLIs on the same CBC smears, configuration by configuration and alternating between the
 * two (this shared 2-core machine's speed drifts by 20 % over an hour, so only ratios taken
 * side by side mean anything), best of 3. Wall time of the whole command, start included;
 * the large smear is bench/large.js's.
 * Usage: node dist/bench/against.js --base DIR [--n 100] [--out docs/against.json]
 *   DIR: a built checkout of the other version, e.g.
 *   git worktree add /tmp/base <commit> && (cd /tmp/base && ln -s "$PWD/node_modules" . && npx tsc -p tsconfig.json)
 */
import { spawnSync } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { CLI, ROOT, SAMPLES } from '../test/helpers.js';
import { makeLargeSmear } from './large.js';
import { machine, smearFolder, timeCount } from './smears.js';

const { values: a } = parseArgs({ options: { base: { type: 'string' }, n: { type: 'string', default: '100' }, out: { type: 'string' } } });
if (!a.base) throw new Error('--base DIR: a built checkout of the version to compare with');
const baseCli = join(resolve(a.base), 'bin', 'hemocount.js');
if (!existsSync(join(resolve(a.base), 'dist', 'src', 'cli', 'main.js'))) throw new Error(`${a.base}: not built (run npx tsc -p tsconfig.json there)`);
const n = Number(a.n);
const { dir, images } = smearFolder(n, 'hemocount-bench-against-');
const large = await makeLargeSmear(12000, 9000, join(tmpdir(), 'hemocount-large-12000x9000.jpg'));
// '-dirty': the measured tree had changes not yet committed
const git = (cwd: string) => spawnSync('git', ['describe', '--always', '--dirty'], { cwd, encoding: 'utf8' }).stdout.trim();

// The first three and the last run each build as it comes (its own default model, threads and workers): an
// older build may lack the options the others name, and then its side is recorded as unsupported.
const configs: Record<string, { args: string[]; images: number }> = {
  'one image (start-up)': { args: [join(SAMPLES, 'BloodImage_00004.jpg')], images: 1 },
  'defaults, no pictures': { args: [images], images: n },
  'defaults, --out (annotated pictures)': { args: [images, '--out', join(dir, 'out')], images: n },
  'int8, no pictures, --jobs 2': { args: [images, '--model', 'int8', '--jobs', '2'], images: n },
  'int8, no pictures, --jobs 1': { args: [images, '--model', 'int8', '--jobs', '1'], images: n },
  'fp32, no pictures, --jobs 2': { args: [images, '--model', 'fp32', '--jobs', '2'], images: n },
  'int8, --out PNG, --jobs 2': { args: [images, '--model', 'int8', '--jobs', '2', '--out', join(dir, 'out')], images: n },
  'int8, one 12000 x 9000 smear': { args: [large, '--model', 'int8'], images: 1 },
  'defaults, one 12000 x 9000 smear': { args: [large], images: 1 },
};
const results: Record<string, unknown> = {};
for (const [name, c] of Object.entries(configs)) {
  let [base, mine] = [Infinity, Infinity];
  let unsupported: string | undefined;
  for (let k = 0; k < 3; k++) {
    if (unsupported === undefined) {
      try {
        base = Math.min(base, timeCount(baseCli, resolve(a.base), dir, c.args));
      } catch (e) {
        // an option or bundled model the base lacks; any other failure is a failure
        const line = String((e as Error).message)
          .split('\n')
          .find((l) => /Unknown option|cannot read the model file/.test(l));
        if (!line) throw e;
        unsupported = line.replace(/^.*?hemocount: /, '');
      }
    }
    mine = Math.min(mine, timeCount(CLI, ROOT, dir, c.args));
  }
  if (unsupported !== undefined) {
    results[name] = {
      baseUnsupported: unsupported.trim().slice(0, 120),
      thisSeconds: +mine.toFixed(2),
      ...(c.images > 1 && { thisImagesPerS: +(c.images / mine).toFixed(1) }),
    };
    console.error(name, JSON.stringify(results[name]));
    continue;
  }
  results[name] = {
    baseSeconds: +base.toFixed(2),
    thisSeconds: +mine.toFixed(2),
    ...(c.images > 1 && { baseImagesPerS: +(c.images / base).toFixed(1), thisImagesPerS: +(c.images / mine).toFixed(1) }),
    speedup: +(base / mine).toFixed(2),
  };
  console.error(name, JSON.stringify(results[name]));
}
const doc = { machine: machine(), images: n, base: { dir: a.base, commit: git(a.base) }, this: { commit: git(ROOT) }, note: 'best of 3, alternating', results };
console.log(JSON.stringify(doc, null, 1));
if (a.out) writeFileSync(a.out, JSON.stringify(doc, null, 1) + '\n');
