/**
 * ONNX model files: the embedded decoding metadata (read and rewritten without Python or
 * onnxruntime, by walking the protobuf's top-level fields) and an onnxruntime-node session.
 */
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import * as ort from 'onnxruntime-node';
import type { InputTensor } from '../core/pipeline.js';
import { CLASSES, type ModelMetadata } from '../core/types.js';
import { VOCABULARY_VERSION } from '../core/vocabulary.js';

const METADATA_FIELD = 14; // ModelProto.metadata_props
const METADATA_KEY = 'hemocount';

function readVarint(buf: Uint8Array, pos: number): [number, number] {
  let v = 0;
  let mul = 1;
  for (;;) {
    if (pos >= buf.length) throw new Error('truncated protobuf varint');
    const b = buf[pos++]!;
    v += (b & 0x7f) * mul;
    if (b < 0x80) return [v, pos];
    mul *= 128;
  }
}

function writeVarint(v: number): number[] {
  const out: number[] = [];
  while (v >= 0x80) {
    out.push((v % 128) | 0x80);
    v = Math.floor(v / 128);
  }
  out.push(v);
  return out;
}

interface Field {
  no: number;
  start: number;
  end: number;
  body?: [number, number];
}

function topLevelFields(buf: Uint8Array): Field[] {
  const fields: Field[] = [];
  let pos = 0;
  while (pos < buf.length) {
    const start = pos;
    const [key, p1] = readVarint(buf, pos);
    const no = Math.floor(key / 8);
    const wire = key & 7;
    pos = p1;
    let body: [number, number] | undefined;
    if (wire === 0) pos = readVarint(buf, pos)[1];
    else if (wire === 1) pos += 8;
    else if (wire === 5) pos += 4;
    else if (wire === 2) {
      const [len, p2] = readVarint(buf, pos);
      body = [p2, p2 + len];
      pos = p2 + len;
    } else throw new Error(`unsupported protobuf wire type ${wire}`);
    if (pos > buf.length || no === 0) throw new Error('malformed protobuf');
    fields.push({ no, start, end: pos, body });
  }
  return fields;
}

function entry(buf: Uint8Array, [s, e]: [number, number]): [string, string] {
  const kv: [string, string] = ['', ''];
  const dec = new TextDecoder();
  for (const f of topLevelFields(buf.subarray(s, e)))
    if (f.body && (f.no === 1 || f.no === 2)) kv[f.no - 1] = dec.decode(buf.subarray(s + f.body[0], s + f.body[1]));
  return [kv[0], kv[1]];
}

/** The hemocount metadata document embedded in an ONNX file's metadata_props. */
export function readMetadata(bytes: Uint8Array, file = 'model'): ModelMetadata {
  let fields: Field[];
  try {
    fields = topLevelFields(bytes);
  } catch (e) {
    throw new Error(`${file}: not an ONNX model (${(e as Error).message})`);
  }
  for (const f of fields) {
    if (f.no !== METADATA_FIELD || !f.body) continue;
    const [k, v] = entry(bytes, f.body);
    if (k !== METADATA_KEY) continue;
    let meta: ModelMetadata;
    try {
      meta = JSON.parse(v) as ModelMetadata;
    } catch (e) {
      throw new Error(`${file}: its hemocount metadata is not valid JSON (${(e as Error).message})`);
    }
    const bad = metadataProblem(meta);
    if (bad) throw new Error(`${file}: unusable hemocount metadata: ${bad}`);
    return meta;
  }
  throw new Error(`${file}: no hemocount metadata in this ONNX file (export it with 'python3 -m hemocount_train export')`);
}

/** What makes a metadata document unusable, or null. Checked on load, so a bad file fails with its name. */
export function metadataProblem(m: ModelMetadata): string | null {
  const num = (v: unknown) => typeof v === 'number' && Number.isFinite(v);
  if (!m || typeof m !== 'object') return 'not an object';
  // format 3: the input may be the 8-bit image (NHWC uint8); 2: the outputs' layout is named
  // (planar); 1: torchvision's interleaved layout. A build refuses a format newer than it
  // reads instead of feeding or decoding it wrongly.
  if (typeof m.format !== 'string' || !/^hemocount-retinanet\/[123]$/.test(m.format))
    return `format '${String(m.format)}' is not hemocount-retinanet/1, /2 or /3 (made by a newer version of hemocount?)`;
  // models before the vocabulary file carry none: version 1 is what they were made with
  if (m.vocabulary !== undefined && (!Number.isInteger(m.vocabulary) || m.vocabulary > VOCABULARY_VERSION))
    return `its cell vocabulary version ${String(m.vocabulary)} is newer than this hemocount's (${VOCABULARY_VERSION}): update hemocount`;
  for (const k of CLASSES) {
    if (!num(m.thresholds?.[k]) || m.thresholds[k] < 0 || m.thresholds[k] > 1) return `thresholds.${k} must be a number from 0 to 1`;
    if (m.review !== undefined && m.review[k] !== undefined && !num(m.review[k])) return `review.${k} must be a number`;
  }
  if (!Array.isArray(m.anchors?.levels) || !m.anchors.levels.length) return 'anchors.levels is missing';
  for (const l of m.anchors.levels)
    if (!num(l.stride) || !Array.isArray(l.sizes) || !Array.isArray(l.aspect_ratios)) return 'an anchor level lacks stride, sizes or aspect_ratios';
  if (!num(m.input?.pad_multiple) || !Array.isArray(m.input?.mean) || !Array.isArray(m.input?.std)) return 'input (pad_multiple, mean, std) is missing';
  if (m.input.mean.length !== 3 || m.input.std.length !== 3) return 'input mean and std need 3 values (R, G, B)';
  const input = `${m.input.layout ?? 'NCHW'} ${m.input.dtype ?? 'float32'}`;
  if (input !== 'NCHW float32' && !(input === 'NHWC uint8' && m.format === 'hemocount-retinanet/3'))
    return `input '${input}' is not one this hemocount feeds with format ${m.format} (NCHW float32, or NHWC uint8 from format 3)`;
  if (!num(m.postprocess?.score_floor) || !num(m.postprocess?.nms_iou)) return 'postprocess (score_floor, nms_iou) is missing';
  if (!Array.isArray(m.box_coder?.weights)) return 'box_coder.weights is missing';
  const layout = m.outputs?.layout ?? 'interleaved';
  if (layout !== 'interleaved' && (m.format === 'hemocount-retinanet/1' || layout !== 'planar'))
    return `outputs.layout '${String(layout)}' is not one this hemocount reads with format ${m.format}`;
  if (!Array.isArray(m.classes) || m.classes.map((c) => c?.name).join() !== CLASSES.join()) return `classes must be ${CLASSES.join(', ')}`;
  return null;
}

/** A copy of the ONNX bytes whose hemocount metadata is replaced by `meta`. */
export function withMetadata(bytes: Uint8Array, meta: ModelMetadata): Uint8Array {
  const keep: Uint8Array[] = [];
  for (const f of topLevelFields(bytes)) {
    if (f.no === METADATA_FIELD && f.body && entry(bytes, f.body)[0] === METADATA_KEY) continue;
    keep.push(bytes.subarray(f.start, f.end));
  }
  const enc = new TextEncoder();
  const str = (no: number, s: Uint8Array) => [...writeVarint(no * 8 + 2), ...writeVarint(s.length), ...s];
  const inner = [...str(1, enc.encode(METADATA_KEY)), ...str(2, enc.encode(JSON.stringify(meta)))];
  keep.push(Uint8Array.from([...writeVarint(METADATA_FIELD * 8 + 2), ...writeVarint(inner.length), ...inner]));
  const out = new Uint8Array(keep.reduce((s, b) => s + b.length, 0));
  let o = 0;
  for (const b of keep) {
    out.set(b, o);
    o += b.length;
  }
  return out;
}

export function sha256(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

const ortTensor = (x: InputTensor) => (x.data instanceof Uint8Array ? new ort.Tensor('uint8', x.data, x.dims) : new ort.Tensor('float32', x.data, x.dims));

export interface OnnxModel {
  path: string;
  bytes: Uint8Array;
  metadata: ModelMetadata;
  sha256: string;
  run(x: InputTensor): Promise<{ scores: Float32Array; deltas: Float32Array }>;
  release(): Promise<void>;
}

/**
 * lazy: create the onnxruntime session at the first run, not now (a process that hands the
 * images to worker threads needs only the metadata; a session costs about 0.1 s to create).
 */
export async function openOnnx(path: string, threads?: number, lazy = false): Promise<OnnxModel> {
  let bytes: Uint8Array;
  try {
    bytes = new Uint8Array(await readFile(path));
  } catch (e) {
    throw new Error(`${path}: cannot read the model file (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  const metadata = readMetadata(bytes, path);
  let session: Promise<ort.InferenceSession> | undefined;
  const open = () =>
    (session ??= ort.InferenceSession.create(bytes, {
      graphOptimizationLevel: 'all',
      ...(threads ? { intraOpNumThreads: threads } : {}),
    }).catch((e: Error) => {
      throw new Error(`${path}: onnxruntime cannot load this model (${e.message})`);
    }));
  if (!lazy) await open();
  return {
    path,
    bytes,
    metadata,
    sha256: sha256(bytes),
    async run(x) {
      const session = await open();
      const { scores, deltas } = await session.run({ image: ortTensor(x) }).catch((e: Error) => {
        // a model whose metadata promises another input than its graph takes: the model is at fault
        if (/Unexpected input data type|invalid dimensions/i.test(e.message))
          throw new Error(
            `${path}: its metadata's input (${x.data instanceof Uint8Array ? 'NHWC uint8' : 'NCHW float32'}) is not what its graph takes (${e.message})`,
          );
        throw e;
      });
      if (!scores || !deltas) throw new Error(`${path}: the model has no 'scores' and 'deltas' outputs`);
      return { scores: scores.data as Float32Array, deltas: deltas.data as Float32Array };
    },
    // a session that failed to open has nothing to release
    release: async () => {
      if (session)
        await session.then(
          (x) => x.release(),
          () => undefined,
        );
    },
  };
}
