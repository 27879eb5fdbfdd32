/**
 * The library's heart: a loaded model that finds and counts cells in an image.
 * Whole images up to WHOLE_IMAGE_PIXELS go through the network at once; larger ones in
 * overlapping native-resolution tiles read strip by strip, so memory stays bounded.
 */
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { applyThresholds, parseThresholds } from './core/count.js';
import type { ImageResult } from './core/formats.js';
import { checkDetectOptions, type DetectOptions, shown, type Detected as CoreDetected, detect, type ScaleEstimate } from './core/detect.js';
import { crop, megapixels, type Runner, WHOLE_IMAGE_PIXELS } from './core/pipeline.js';
import { CLASSES, type ModelMetadata, type PerClass, perClass, type Thresholds } from './core/types.js';
import { decodeRgb, headerPixels, type ImageInput, imageSource, isRaw, probe, type RawImage, regions } from './adapters/image.js';
import { type OnnxModel, openOnnx } from './adapters/onnx.js';

export { WHOLE_IMAGE_PIXELS, TILE_SIZE, TILE_OVERLAP } from './core/pipeline.js';

const here = dirname(fileURLToPath(import.meta.url));
/**
 * A bundled model (models/ at the package root, from src/ or dist/src/): 'int8', the default
 * (the network quantised; the release fails unless it is within 0.5 F1 points of fp32 on
 * every validation subset), or 'fp32', the full-precision network it was built from.
 */
export function defaultModelPath(precision: 'fp32' | 'int8' = 'int8'): string {
  const name = precision === 'int8' ? 'hemocount-default.int8.onnx' : 'hemocount-default.onnx';
  for (const p of [join(here, '..', 'models', name), join(here, '..', '..', 'models', name)]) {
    if (existsSync(p)) return p;
  }
  throw new Error(`the bundled model models/${name} is missing from this installation`);
}

/** A model argument: a path, or 'fp32' / 'int8' for a bundled model. */
export const modelPath = (m?: string) => (m === 'fp32' || m === 'int8' ? defaultModelPath(m) : (m ?? defaultModelPath()));

export type { DetectOptions, ScaleEstimate };

export interface ModelDetectOptions extends DetectOptions {
  /** Refuse images above this many pixels (checked from the header, before decoding). */
  maxPixels?: number;
  /** Return the decoded pixels (images decoded whole), so a picture can be drawn without decoding again. */
  keepPixels?: boolean;
  /** Stop before the next network pass once aborted (the promise rejects with the signal's reason). */
  signal?: AbortSignal;
}

export interface CountOptions extends ModelDetectOptions {
  /** Counting threshold per class (or one number for all); defaults to the model's calibrated ones. */
  thresholds?: Partial<PerClass<number>> | number;
  /** Lower edge of the review band per class; detections between it and the threshold are `uncertain`. */
  review?: Partial<PerClass<number>> | number;
  /** Include every candidate above the model's floor in the result. */
  candidates?: boolean;
  /** File name to report (defaults to the path, or 'image'). */
  name?: string;
}

export interface Detected extends CoreDetected {
  ms: number;
  /** Set when the candidates average the image and its flips (test-time augmentation). */
  tta?: true;
  /** With keepPixels: the image as decoded (oriented 8-bit RGB); absent for images read in tiles. */
  pixels?: RawImage;
}

export class Model {
  private constructor(private readonly onnx: OnnxModel) {}

  /** lazy: open the network session at the first detection (see openOnnx). */
  static async load(path?: string, opts: { threads?: number; lazy?: boolean } = {}): Promise<Model> {
    if (path !== undefined && typeof path !== 'string') throw new TypeError(`model path must be a string, not ${typeof path}`);
    if (opts.threads !== undefined && !(Number.isInteger(opts.threads) && opts.threads >= 1))
      throw new RangeError(`threads must be a whole number >= 1, not ${shown(opts.threads)}`);
    return new Model(await openOnnx(modelPath(path), opts.threads, opts.lazy));
  }

  get metadata(): ModelMetadata {
    return this.onnx.metadata;
  }
  get path(): string {
    return this.onnx.path;
  }
  get info() {
    return { name: this.onnx.metadata.name, version: this.onnx.metadata.version, sha256: this.onnx.sha256 };
  }
  /** The ONNX bytes (e.g. to serve the same model to the browser). */
  get bytes(): Uint8Array {
    return this.onnx.bytes;
  }

  /**
   * Resolve user thresholds against the model's recommended ones: numbers per class, one
   * number, or a spec string as the CLI, the server and the queue take it ('0.4',
   * 'RBC=0.25,WBC=0.65').
   */
  thresholds(count?: CountOptions['thresholds'] | string, review?: CountOptions['review'] | string): Thresholds {
    const pick = (spec: CountOptions['thresholds'] | string, base: PerClass<number>, name: string) => {
      const v = typeof spec === 'string' ? parseThresholds(spec, base) : spec;
      checkThresholdArg(v, name);
      return perClass((c) => (typeof v === 'number' ? v : (v?.[c] ?? base[c])));
    };
    const t = pick(count, this.metadata.thresholds, 'thresholds');
    const baseReview = perClass((c) => Math.min(this.metadata.review?.[c] ?? t[c], t[c]));
    // a counting threshold moved below the model's review edge leaves no review band
    const r = pick(review, baseReview, 'review');
    return { count: t, review: perClass((c) => Math.min(r[c], t[c])) };
  }

  /** All candidates above the model's floor, in original-image pixels. */
  async detect(input: ImageInput, opts: ModelDetectOptions = {}): Promise<Detected> {
    const t0 = performance.now();
    checkInput(input);
    checkDetectOptions(opts); // before decoding anything
    if (opts.signal !== undefined && !(opts.signal instanceof AbortSignal)) throw new TypeError(`signal must be an AbortSignal, not ${shown(opts.signal)}`);
    const { signal } = opts;
    signal?.throwIfAborted();
    const name = typeof input === 'string' ? input : 'image';
    const source = typeof input === 'string' ? await imageSource(input) : input;
    // small images are decoded into memory; large ones are read region by region (bounded memory)
    let whole: RawImage | null = null;
    // a JPEG or PNG whose header says it is small is decoded at once and its size taken from the
    // pixels: libvips' header probe would cost 0.2-0.5 ms more (a 640 x 480 JPEG decodes in 1.6-2)
    const px = source instanceof Uint8Array ? headerPixels(source) : null;
    if (px !== null && px <= WHOLE_IMAGE_PIXELS && !(opts.maxPixels && px > opts.maxPixels)) whole = await decodeRgb(source, name);
    const { width, height } = whole ?? (await probe(source, name));
    if (opts.maxPixels && width * height > opts.maxPixels) {
      throw new Error(
        `${name}: ${width} x ${height} is ${megapixels(width * height)} megapixels, above the limit of ${megapixels(opts.maxPixels)} (maxPixels; --max-megapixels on the command line)`,
      );
    }
    const large = width * height > WHOLE_IMAGE_PIXELS && !isRaw(source) ? regions(source, width, height, name) : null;
    const read = async (l: number, t: number, w: number, h: number) => {
      if (large) return large.read(l, t, w, h);
      whole ??= await decodeRgb(source, name);
      return l === 0 && t === 0 && w === whole.width && h === whole.height ? whole : crop(whole, l, t, w, h);
    };
    // a pass of a large image takes seconds: an abandoned count stops at the next one
    const run: Runner = signal
      ? (x) => {
          signal.throwIfAborted();
          return this.onnx.run(x);
        }
      : this.onnx.run.bind(this.onnx);
    try {
      const det = await detect(run, this.metadata, { width, height, read }, opts);
      return { ...det, ms: performance.now() - t0, ...(opts.tta ? { tta: true as const } : {}), ...(opts.keepPixels && whole ? { pixels: whole } : {}) };
    } finally {
      await large?.close();
    }
  }

  /** Detect, apply per-class thresholds and the review band, count. */
  async count(input: ImageInput, opts: CountOptions = {}): Promise<ImageResult> {
    const floor = opts.candidates ? undefined : lowestScore(this.thresholds(opts.thresholds, opts.review));
    const det = await this.detect(input, {
      scale: opts.scale,
      tta: opts.tta,
      whiteBalance: opts.whiteBalance,
      maxPixels: opts.maxPixels,
      tiling: opts.tiling,
      floor,
      signal: opts.signal,
    });
    return this.summarise(det, opts, opts.name ?? (typeof input === 'string' ? input : 'image'));
  }

  /** Re-threshold already detected candidates without running the network again. */
  summarise(det: Detected, opts: CountOptions = {}, file = 'image'): ImageResult {
    if (!det || !Array.isArray(det.candidates)) throw new TypeError('summarise needs what detect() returned');
    const s = applyThresholds(det.candidates, this.thresholds(opts.thresholds, opts.review));
    return {
      file,
      width: det.width,
      height: det.height,
      counts: s.counts,
      uncertain: s.uncertain,
      meanScore: s.meanScore,
      detections: s.detections,
      ...(opts.candidates ? { candidates: det.candidates } : {}),
      tiles: det.tiles,
      scale: det.scale,
      ...(det.whiteBalance ? { whiteBalance: det.whiteBalance.map((g) => Math.round(g * 1000) / 1000) as [number, number, number] } : {}),
      ...(det.tta ? { tta: true as const } : {}),
      ms: Math.round(det.ms),
    };
  }

  async release(): Promise<void> {
    await this.onnx.release();
  }
}

/** The lowest score a count with these thresholds looks at (its lowest review edge): detect's `floor`. */
export function lowestScore(t: Thresholds): number {
  return Math.min(...CLASSES.map((c) => t.review[c]));
}

/** Load a model: the bundled default, or an ONNX file exported by hemocount's training. */
export function loadModel(path?: string, opts?: { threads?: number }): Promise<Model> {
  return Model.load(path, opts);
}

/** sharp-style argument checks: a TypeError or RangeError naming the argument and the value. */
function checkThresholdArg(v: unknown, name: string): void {
  if (v === undefined) return;
  const prob = (x: unknown, what: string) => {
    if (typeof x !== 'number' || !Number.isFinite(x) || x < 0 || x > 1) throw new RangeError(`${what} must be a number from 0 to 1, not ${shown(x)}`);
  };
  if (typeof v === 'number') {
    prob(v, name);
    return;
  }
  if (typeof v !== 'object' || v === null) throw new TypeError(`${name} must be a number or { RBC, WBC, Platelets }, not ${shown(v)}`);
  for (const [k, x] of Object.entries(v)) {
    if (!(CLASSES as readonly string[]).includes(k)) throw new TypeError(`${name}: unknown class '${k}' (RBC, WBC or Platelets)`);
    prob(x, `${name}.${k}`);
  }
}

function checkInput(input: unknown): void {
  if (input instanceof Uint8Array && input.length === 0) throw new RangeError('image bytes are empty (0 bytes)');
  if (typeof input === 'string' || input instanceof Uint8Array) return;
  const raw = input as { data?: unknown; width?: unknown; height?: unknown; channels?: unknown } | null;
  if (!raw || typeof raw !== 'object' || !(raw.data instanceof Uint8Array))
    throw new TypeError('image must be a path, encoded bytes (Uint8Array) or { data: Uint8Array, width, height, channels: 3 }');
  const { width: w, height: h, channels: ch } = raw;
  if (!Number.isInteger(w) || !Number.isInteger(h) || (w as number) < 1 || (h as number) < 1)
    throw new RangeError(`raw image width and height must be whole numbers >= 1, not ${String(w)} x ${String(h)}`);
  if (ch !== 3) throw new RangeError(`raw image channels must be 3 (RGB), not ${String(ch)}`);
  if (raw.data.length !== (w as number) * (h as number) * 3)
    throw new RangeError(`raw image data has ${raw.data.length} bytes; ${w} x ${h} x 3 needs ${(w as number) * (h as number) * 3}`);
}
