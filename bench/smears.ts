/** A folder of N smears for the folder benchmarks: CBC full fields (640 x 480) when the shared datasets are there, else the samples. */
import { copyFileSync, mkdirSync, readdirSync } from 'node:fs';
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

export const machine = () => `${cpus()[0]?.model ?? 'unknown CPU'}, ${cpus().length} cores, ${Math.round(totalmem() / 2 ** 30)} GiB, Node ${process.version}`;
