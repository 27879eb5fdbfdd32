import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const SAMPLES = join(ROOT, 'samples');
export const MODEL = join(ROOT, 'models', 'hemocount-default.onnx');
export const CLI = join(ROOT, 'bin', 'hemocount.js');
export const tmp = (p = 'hemocount-test-') => mkdtempSync(join(tmpdir(), p));
