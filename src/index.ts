/** hemocount's public API. */
export { loadModel, Model, defaultModelPath, type CountOptions, type Detected } from './detector.js';
export { applyThresholds, parseThresholds } from './core/count.js';
export * from './core/types.js';
export * as metrics from './core/metrics.js';
export * as formats from './core/formats.js';
export type { CountDocument, ImageResult } from './core/formats.js';
export { drawAnnotated } from './adapters/image.js';
export { collect, calibrateToFile, buildReport, type Collected } from './evaluation.js';
export { loadTruth } from './adapters/files.js';
