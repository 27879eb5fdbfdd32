/** A folder of N smears for the folder benchmarks: CBC full fields (640 x 480) when the shared datasets are there, else the samples. */
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { cpus, totalmem } from 'node:os';
import { join } from 'node:path';
import { ROOT, SAMPLES, tmp } from '../test/helpers.js';

export function smearFolder(n: number, prefix: string): { dir: string; images: string } {
  const dir = tmp(prefix);
  const images = join(dir, 'images');
  mkdirSync(images);
  const cbc = join(ROOT, '..', 'shared', 'datasets', 'cbc', 'images');
  const jpgs = (d: string) =>
    readdirSync(d)
      .filter((f) => f.endsWith('.jpg'))
      .sort()
      .map((f) => join(d, f));
  let pool: string[];
  try {
    pool = jpgs(cbc);
  } catch {
    pool = jpgs(SAMPLES);
  }
  for (let i = 0; i < n; i++) {
    const src = pool[i % pool.length];
    if (src === undefined) throw new Error(`no .jpg smears to copy in ${cbc} or ${SAMPLES}`);
    copyFileSync(src, join(images, `f${String(i).padStart(4, '0')}.jpg`));
  }
  return { dir, images };
}

/**
 * The machine, named well enough to tell hosts apart: hosts of one kind may carry CPUs of
 * different generations under the same model name ("AMD EPYC"), and int8 speed depends on
 * whether the CPU has VNNI, so the family/model numbers and the widest vector extension go in.
 */
export function machine(): string {
  let cpu = cpus()[0]?.model ?? 'unknown CPU';
  try {
    const info = readFileSync('/proc/cpuinfo', 'utf8');
    const field = (k: string) => new RegExp(`^${k}\\s*: (.*)$`, 'm').exec(info)?.[1];
    const flags = new Set((field('flags') ?? '').split(' '));
    const isa = flags.has('avx512_vnni')
      ? 'AVX-512 VNNI'
      : flags.has('avx512f')
        ? 'AVX-512'
        : flags.has('avx_vnni')
          ? 'AVX-VNNI'
          : flags.has('avx2')
            ? 'AVX2'
            : '';
    const family = field('cpu family');
    const model = field('model');
    if (family && model) cpu += ` (family ${family} model ${model}${isa ? `, ${isa}` : ''})`;
  } catch {
    // not Linux: the model name alone
  }
  return `${cpu}, ${cpus().length} cores, ${Math.round(totalmem() / 2 ** 30)} GiB, Node ${process.version}`;
}

/**
 * Seconds of one whole `hemocount count` command (process start and model load included) of
 * the CLI at `cli`, run in `cwd`; its results go to dir/r.json, pictures (if asked) to dir/out,
 * cleared first.
 */
export function timeCount(cli: string, cwd: string, dir: string, args: string[]): number {
  rmSync(join(dir, 'out'), { recursive: true, force: true });
  const t0 = performance.now();
  const r = spawnSync(process.execPath, [cli, 'count', ...args, '--quiet', '--json', join(dir, 'r.json'), '--overwrite'], { cwd, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${cli} count ${args.join(' ')}: ${r.stderr}`);
  return (performance.now() - t0) / 1000;
}
