/**
 * Private mode: the same ONNX model runs in this browser with onnxruntime-web, through the
 * same post-processing module as the server (src/core/pipeline.ts), so images never leave
 * the machine. The load and each image are on the page's performance timeline
 * ('hemocount:*' measures), which bench/browser.ts reads.
 */
import type * as Ort from 'onnxruntime-web';
import { type DetectOptions, type Detected, detect } from '../../src/core/detect.js';
import { paddedSize } from '../../src/core/decode.js';
import { crop, type InputTensor, megapixels, type Pixels, toTensor } from '../../src/core/pipeline.js';
import type { ModelMetadata } from '../../src/core/types.js';

interface Loaded {
  session: Ort.InferenceSession;
  ort: typeof Ort;
  meta: ModelMetadata;
}

let ready: Promise<Loaded> | null = null;

const since = (name: string, start: number) => performance.measure(`hemocount:${name}`, { start, end: performance.now() });

function load(): Promise<Loaded> {
  if (ready) return ready;
  ready = (async () => {
    const t0 = performance.now();
    // the model the server offers private mode (a content-addressed URL, cached for good) ...
    const info: Promise<{ metadata: ModelMetadata; browser?: { model: string; input?: ModelMetadata['input'] } }> = fetch('/api/model').then((r) => r.json());
    const bytes = info.then(async (i) => {
      const r = await fetch(i.browser?.model ?? '/api/model.onnx');
      if (!r.ok) throw new Error(`the model download failed (${r.status})`);
      const b = await r.arrayBuffer();
      since('model-download', t0);
      return new Uint8Array(b);
    });
    // ... downloads while onnxruntime-web loads: served by hemocount itself (no CDN), at run time so the bundle stays small
    const runtime = import(/* @vite-ignore */ `${location.origin}/ort/ort.wasm.min.mjs`) as Promise<typeof Ort>;
    const [ort, i, buffer] = await Promise.all([runtime, info, bytes]);
    ort.env.wasm.wasmPaths = '/ort/';
    // threads need a cross-origin isolated page; one per core, at most 4 (on 2 cores, 2 threads took 13-46 % off
    // each image, unless other work kept both cores busy, when 1 thread was faster: bench/browser.ts)
    ort.env.wasm.numThreads = self.crossOriginIsolated ? Math.max(1, Math.min(4, navigator.hardwareConcurrency || 1)) : 1;
    const t1 = performance.now();
    // the WebAssembly runtime (download, compile) starts with the first session
    const session = await ort.InferenceSession.create(buffer, { executionProviders: ['wasm'], graphOptimizationLevel: 'all' });
    since('session', t1);
    since('load', t0);
    // the server's decoding and thresholds, and the input the browser's model takes (the int8 model's is the 8-bit image)
    return { session, ort, meta: { ...i.metadata, input: i.browser?.input ?? i.metadata.input } };
  })();
  // a failed load (say, the server was down) is tried again on the next image
  ready.catch(() => {
    ready = null;
  });
  return ready;
}

async function pixelsOf(blob: Blob, limit?: number | null): Promise<Pixels> {
  // a limit the server could not say in JSON (null for Infinity) is no limit
  const maxPixels = typeof limit === 'number' && limit > 0 ? limit : Infinity;
  const bmp = await createImageBitmap(blob, { imageOrientation: 'from-image', premultiplyAlpha: 'none', colorSpaceConversion: 'none' }).catch((e: Error) => {
    throw new Error(`cannot be decoded here (${e.message})`);
  });
  const { width, height } = bmp;
  if (width * height > maxPixels) {
    bmp.close();
    throw new Error(`${width}x${height} is ${megapixels(width * height)} megapixels; the limit is ${megapixels(maxPixels)}, as on the server`);
  }
  const canvas = new OffscreenCanvas(bmp.width, bmp.height);
  const ctx = canvas.getContext('2d', { willReadFrequently: true })!;
  ctx.fillStyle = '#fff'; // alpha is flattened on white, as on the server
  ctx.fillRect(0, 0, bmp.width, bmp.height);
  ctx.drawImage(bmp, 0, 0);
  const { data } = ctx.getImageData(0, 0, bmp.width, bmp.height);
  bmp.close();
  return { data, width: canvas.width, height: canvas.height, channels: 4 };
}

async function run(session: Ort.InferenceSession, ort: typeof Ort, x: InputTensor) {
  const image = x.data instanceof Uint8Array ? new ort.Tensor('uint8', x.data, x.dims) : new ort.Tensor('float32', x.data, x.dims);
  const { scores, deltas } = await session.run({ image });
  if (!scores || !deltas) throw new Error("the model has no 'scores' and 'deltas' outputs");
  return { scores: scores.data as Float32Array, deltas: deltas.data as Float32Array };
}

let warming: Promise<unknown> | null = null;
let counting = false;

/**
 * Get private mode ready before the first image: load onnxruntime-web, the model and the
 * session, and run the network once on an empty 640 x 480 field, which pays the first pass's
 * one-time costs (WebAssembly compiled on first call, buffers), unless an image is already
 * waiting. For when private mode is switched on; detectInBrowser waits for it.
 */
export function preparePrivateMode(): void {
  warming ??= load()
    .then(async ({ session, ort, meta }) => {
      if (counting) return; // the image pays those costs itself, sooner
      const t0 = performance.now();
      const [h, w] = paddedSize(meta, 480, 640);
      await run(session, ort, toTensor({ data: new Uint8Array(640 * 480 * 3).fill(255), width: 640, height: 480, channels: 3 }, meta, h, w));
      since('warm-up', t0);
    })
    .catch(() => {
      warming = null;
    });
}

/** maxPixels: the server's limit, kept here too (a tab counting an 81-megapixel image is busy for a minute or more). */
export async function detectInBrowser(blob: Blob, opts: DetectOptions & { maxPixels?: number } = {}): Promise<Detected> {
  counting = true;
  warming ??= Promise.resolve(); // no warm-up once counting has begun
  const { session, ort, meta } = await load();
  await warming; // one run at a time on a session
  const t0 = performance.now();
  const px = await pixelsOf(blob, opts.maxPixels);
  const read = async (l: number, t: number, w: number, h: number) => (l === 0 && t === 0 && w === px.width && h === px.height ? px : crop(px, l, t, w, h));
  const found = await detect((x) => run(session, ort, x), meta, { width: px.width, height: px.height, read }, opts);
  since('detect', t0);
  return found;
}
