/**
 * Private mode: the same ONNX model runs in this browser with onnxruntime-web, through the
 * same post-processing module as the server (src/core/pipeline.ts), so images never leave
 * the machine.
 */
import type * as Ort from 'onnxruntime-web';
import { crop, detectPixels, detectTiled, type Pixels, WHOLE_IMAGE_PIXELS } from '../../src/core/pipeline.js';
import type { Candidate, ModelMetadata } from '../../src/core/types.js';

let ready: Promise<{ session: Ort.InferenceSession; ort: typeof Ort; meta: ModelMetadata }> | null = null;

function load() {
  ready ??= (async () => {
    // served by hemocount itself (no CDN); loaded at run time so the bundle stays small
    const ort: typeof Ort = await import(/* @vite-ignore */ `${location.origin}/ort/ort.wasm.min.mjs`);
    ort.env.wasm.wasmPaths = '/ort/';
    ort.env.wasm.numThreads = self.crossOriginIsolated ? Math.max(1, Math.min(4, navigator.hardwareConcurrency || 1)) : 1;
    const [bytes, info] = await Promise.all([
      fetch('/api/model.onnx').then((r) => r.arrayBuffer()),
      fetch('/api/model').then((r) => r.json()),
    ]);
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

export async function detectInBrowser(blob: Blob): Promise<{ width: number; height: number; candidates: Candidate[]; tiles: number }> {
  const { session, ort, meta } = await load();
  const run = async (input: Float32Array, h: number, w: number) => {
    const out = await session.run({ image: new ort.Tensor('float32', input, [1, 3, h, w]) });
    return { scores: out.scores.data as Float32Array, deltas: out.deltas.data as Float32Array };
  };
  const px = await pixelsOf(blob);
  if (px.width * px.height <= WHOLE_IMAGE_PIXELS) {
    return { width: px.width, height: px.height, candidates: await detectPixels(run, meta, px), tiles: 1 };
  }
  const t = await detectTiled(run, meta, px.width, px.height, async (l, top, w, h) => crop(px, l, top, w, h));
  return { width: px.width, height: px.height, ...t };
}
