/**
 * Private mode: the same ONNX model runs in this browser with onnxruntime-web, through the
 * same post-processing module as the server (src/core/pipeline.ts), so images never leave
 * the machine.
 */
import type * as Ort from 'onnxruntime-web';
import { type DetectOptions, type Detected, detect } from '../../src/core/detect.js';
import { crop, type Pixels } from '../../src/core/pipeline.js';
import type { ModelMetadata } from '../../src/core/types.js';

let ready: Promise<{ session: Ort.InferenceSession; ort: typeof Ort; meta: ModelMetadata }> | null = null;

function load() {
  ready ??= (async () => {
    // served by hemocount itself (no CDN); loaded at run time so the bundle stays small
    const ort: typeof Ort = await import(/* @vite-ignore */ `${location.origin}/ort/ort.wasm.min.mjs`);
    ort.env.wasm.wasmPaths = '/ort/';
    ort.env.wasm.numThreads = self.crossOriginIsolated ? Math.max(1, Math.min(4, navigator.hardwareConcurrency || 1)) : 1;
    const [bytes, info] = await Promise.all([fetch('/api/model.onnx').then((r) => r.arrayBuffer()), fetch('/api/model').then((r) => r.json())]);
    const session = await ort.InferenceSession.create(new Uint8Array(bytes), { executionProviders: ['wasm'], graphOptimizationLevel: 'all' });
    return { session, ort, meta: info.metadata as ModelMetadata };
  })();
  return ready;
}

async function pixelsOf(blob: Blob): Promise<Pixels> {
  const bmp = await createImageBitmap(blob, { imageOrientation: 'from-image', premultiplyAlpha: 'none', colorSpaceConversion: 'none' });
  const canvas = new OffscreenCanvas(bmp.width, bmp.height);
  const ctx = canvas.getContext('2d', { willReadFrequently: true })!;
  ctx.fillStyle = '#fff'; // alpha is flattened on white, as on the server
  ctx.fillRect(0, 0, bmp.width, bmp.height);
  ctx.drawImage(bmp, 0, 0);
  const { data } = ctx.getImageData(0, 0, bmp.width, bmp.height);
  bmp.close();
  return { data, width: canvas.width, height: canvas.height, channels: 4 };
}

export async function detectInBrowser(blob: Blob, opts: DetectOptions = {}): Promise<Detected> {
  const { session, ort, meta } = await load();
  const run = async (input: Float32Array, h: number, w: number) => {
    const { scores, deltas } = await session.run({ image: new ort.Tensor('float32', input, [1, 3, h, w]) });
    if (!scores || !deltas) throw new Error("the model has no 'scores' and 'deltas' outputs");
    return { scores: scores.data as Float32Array, deltas: deltas.data as Float32Array };
  };
  const px = await pixelsOf(blob);
  const read = async (l: number, t: number, w: number, h: number) => (l === 0 && t === 0 && w === px.width && h === px.height ? px : crop(px, l, t, w, h));
  return detect(run, meta, { width: px.width, height: px.height, read }, opts);
}
