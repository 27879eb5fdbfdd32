/** One worker of the DetectorPool: a Model of its own, detecting one image per message. */
import { parentPort, workerData } from 'node:worker_threads';
import { Model, type ModelDetectOptions } from '../detector.js';

const port = parentPort!;
let model: Model;
try {
  model = await Model.load(workerData.model, { threads: workerData.threads });
  port.postMessage({ ready: true });
} catch (e) {
  port.postMessage({ error: (e as Error).message });
  process.exit(1);
}

port.on('message', async ({ id, path, opts }: { id: number; path: string; opts: ModelDetectOptions }) => {
  try {
    const det = await model.detect(path, opts);
    const px = det.pixels?.data;
    // hand the decoded pixels over instead of copying them (copy only a view into a larger buffer)
    if (det.pixels && px && (px.byteOffset !== 0 || px.byteLength !== px.buffer.byteLength)) det.pixels.data = px.slice();
    const transfer = det.pixels ? [det.pixels.data.buffer as ArrayBuffer] : [];
    port.postMessage({ id, det }, transfer);
  } catch (e) {
    port.postMessage({ id, error: (e as Error).message });
  }
});
