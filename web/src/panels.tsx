/** The side panels of the web app, each one concern: thresholds, the current image, the sample, exports. */
import type { Reviewed } from '../../src/core/review.js';
import { sampleRows } from '../../src/core/sample-report.js';
import { rbcCountProblem, type SampleSummary } from '../../src/core/samples.js';
import { type CellClass, CLASSES, type ModelMetadata, type Thresholds } from '../../src/core/types.js';
import { COLOURS } from './draw.js';
import type { SampleInfo } from './store.js';

/** One threshold: a range input 0.05-0.95 and its value. */
function Slider(p: { name: string; testId: string; value: number; onInput: (v: number) => void }) {
  return (
    <div>
      {p.name} &ge;{' '}
      <input
        type="range"
        min="0.05"
        max="0.95"
        step="0.01"
        value={p.value}
        data-testid={p.testId}
        onInput={(e) => p.onInput(Number((e.target as HTMLInputElement).value))}
      />{' '}
      <b>{p.value.toFixed(2)}</b>
    </div>
  );
}

export function ThresholdsPanel(p: {
  th: Thresholds;
  setTh: (t: Thresholds) => void;
  visible: Record<CellClass, boolean>;
  setVisible: (v: Record<CellClass, boolean>) => void;
  meta: ModelMetadata;
}) {
  const { th, setTh, visible, setVisible } = p;
  return (
    <section>
      <h2>Thresholds</h2>
      {CLASSES.map((c) => (
        <div class="slider" key={c}>
          <label>
            <span class="swatch" style={{ background: COLOURS[c] }} />
            <input type="checkbox" checked={visible[c]} data-testid={`show-${c}`} onChange={() => setVisible({ ...visible, [c]: !visible[c] })} /> {c}
          </label>
          <Slider
            name="count"
            testId={`th-${c}`}
            value={th.count[c]}
            onInput={(v) => setTh({ count: { ...th.count, [c]: v }, review: { ...th.review, [c]: Math.min(th.review[c], v) } })}
          />
          <Slider
            name="review"
            testId={`rv-${c}`}
            value={th.review[c]}
            onInput={(v) => setTh({ ...th, review: { ...th.review, [c]: Math.min(v, th.count[c]) } })}
          />
        </div>
      ))}
      <button type="button" onClick={() => setTh({ count: { ...p.meta.thresholds }, review: { ...p.meta.review } })}>
        Model defaults
      </button>
    </section>
  );
}

/** Detected, corrected, to review and mean probability per class of the image in view. */
/** fromLabels: the boxes come from a label file, not the model (no probabilities; the sliders do not apply). */
export function ImageCounts({ rv, fromLabels = false }: { rv: Reviewed; fromLabels?: boolean }) {
  return (
    <section>
      <h2>This image</h2>
      <table class="counts" data-testid="counts">
        <tr>
          <th></th>
          <th title={fromLabels ? 'in the label file' : 'counted by the model'}>{fromLabels ? 'labelled' : 'detected'}</th>
          <th title="after your corrections">corrected</th>
          <th title="uncertain: between the review and counting thresholds">review</th>
          <th title="mean probability of the counted cells">mean p</th>
        </tr>
        {CLASSES.map((c) => {
          const ds = rv.detections.filter((d) => d.label === c && !d.uncertain && !d.added);
          return (
            <tr>
              <td>{c}</td>
              <td data-testid={`detected-${c}`}>{rv.detected[c]}</td>
              <td data-testid={`corrected-${c}`}>{rv.corrected[c]}</td>
              <td data-testid={`uncertain-${c}`}>{rv.uncertain[c]}</td>
              <td>{ds.length && !fromLabels ? (ds.reduce((s, d) => s + d.score, 0) / ds.length).toFixed(3) : '-'}</td>
            </tr>
          );
        })}
      </table>
      {fromLabels && <p class="hint">Boxes from the label file: the threshold sliders do not move them; decide its doubtful cells in review mode.</p>}
    </section>
  );
}

/** The sample's name, the reviewer and the analyser's red-cell count; the summary with intervals. */
export function SampleForm(p: { sample: SampleInfo; setSample: (s: SampleInfo) => void; rbcCountOk: boolean; summary?: SampleSummary }) {
  const { sample, setSample, rbcCountOk, summary } = p;
  return (
    <>
      <div class="sample-form">
        <label>
          sample <input data-testid="sample-name" value={sample.name} onInput={(e) => setSample({ ...sample, name: (e.target as HTMLInputElement).value })} />
        </label>
        <label>
          reviewer{' '}
          <input
            data-testid="reviewer"
            placeholder="your name"
            value={sample.reviewer}
            onInput={(e) => setSample({ ...sample, reviewer: (e.target as HTMLInputElement).value })}
          />
        </label>
        <label title="the analyser's red-cell count of this blood, per microlitre: gives ratio-method estimates">
          analyser RBC/&micro;L{' '}
          <input
            data-testid="rbc-count"
            placeholder="e.g. 4.8e6"
            value={sample.rbcCount}
            class={rbcCountOk ? '' : 'bad'}
            title={rbcCountOk ? undefined : `${sample.rbcCount.trim()} ${rbcCountProblem(Number(sample.rbcCount))}`}
            onInput={(e) => setSample({ ...sample, rbcCount: (e.target as HTMLInputElement).value })}
          />
        </label>
      </div>
      {summary && (
        <table class="counts sample" data-testid="sample-summary">
          {sampleRows(summary).map(([k, v]) => (
            <tr>
              <td>{k}</td>
              <td>{v}</td>
            </tr>
          ))}
          <tr>
            <td>fields reviewed / to review</td>
            <td data-testid="review-status">
              {summary.fieldsReviewed} / {summary.fieldsToReview}
            </td>
          </tr>
        </table>
      )}
    </>
  );
}
