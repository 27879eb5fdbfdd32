/** Shared types of hemocount's core (no I/O: also runs in the browser). */

export const CLASSES = ['RBC', 'WBC', 'Platelets'] as const;
export type CellClass = (typeof CLASSES)[number];
export type PerClass<T> = Record<CellClass, T>;

export type Box = [x1: number, y1: number, x2: number, y2: number];

/** A candidate detection above the model's score floor (kept so thresholds can change later). */
export interface Candidate {
  label: CellClass;
  score: number;
  box: Box;
}

export interface Detection extends Candidate {
  /** Between the review threshold and the counting threshold: "please review". */
  uncertain: boolean;
}

export interface AnchorLevel {
  name: string;
  stride: number;
  sizes: number[];
  aspect_ratios: number[];
}

/** The decoding document embedded in every hemocount ONNX file (see training/export.py). */
export interface ModelMetadata {
  format: string;
  /** Version of vocabulary.json the model was exported with (absent before it existed). */
  vocabulary?: number;
  name: string;
  version: string;
  classes: { name: CellClass; colour: string }[];
  input: {
    /** NHWC with dtype 'uint8': the pixels as they are, normalised inside the network. */
    layout: 'NCHW' | 'NHWC';
    /** Absent: float32. */
    dtype?: 'float32' | 'uint8';
    channels: 'RGB';
    scale: number;
    mean: [number, number, number];
    std: [number, number, number];
    pad_multiple: number;
    pad_value: number;
    /** 'background': trained on images whose background was made grey (core/pipeline.ts backgroundColour). */
    white_balance?: 'background';
    /** Per image, never in a model file: the white-balance gains (R, G, B) detect() found, which toTensor applies. */
    gains?: [number, number, number];
  };
  anchors: { levels: AnchorLevel[] };
  /** How the outputs are laid out (core/decode.ts): 'planar' from format 2; absent (interleaved) in format 1. */
  outputs?: { layout?: 'planar' | 'interleaved'; [k: string]: unknown };
  box_coder: { weights: [number, number, number, number]; clamp: number };
  postprocess: { score_floor: number; topk_per_level: number; nms_iou: number; max_detections: number };
  thresholds: PerClass<number>;
  review: PerClass<number>;
  provenance: Record<string, unknown>;
  calibration?: Record<string, unknown>;
  /** Cell size the model was trained for, used by `scale: 'auto'` (see core/detect.ts). */
  scale?: { reference_px?: number; min_px?: number; max_px?: number; wbc_to_rbc?: number; min_score?: number; response?: number };
}

export interface Thresholds {
  count: PerClass<number>;
  review: PerClass<number>;
}

export function perClass<T>(f: (c: CellClass) => T): PerClass<T> {
  return { RBC: f('RBC'), WBC: f('WBC'), Platelets: f('Platelets') };
}
