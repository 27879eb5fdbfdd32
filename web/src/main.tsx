/** hemocount web app: count, look, adjust thresholds, review and correct, export. */
import { render } from 'preact';
import { useEffect, useMemo, useRef, useState } from 'preact/hooks';
import { toCoco, toCsv, toSamplesCsv, toVoc } from '../../src/core/formats.js';
import { renderSampleReport } from '../../src/core/sample-report.js';
import { noCorrections, ratios, review, type Reviewed } from '../../src/core/review.js';
import { type Box, type CellClass, CLASSES, perClass, type Thresholds } from '../../src/core/types.js';
import { type Item, restore, save } from './store.js';
import { ImageCounts, SampleForm, ThresholdsPanel } from './panels.js';
import { annotatedPng, countFiles, download, LABEL_THRESHOLDS, labelledItems, type ModelInfo, rbcPerUl, sampleDocument, stem, thumbnail } from './session.js';
import { Viewer } from './viewer.js';
import { preparePrivateMode } from './private.js';

const fmt = (v: number | null, d = 1) => (v === null ? '-' : v.toFixed(d));

function App() {
  const [model, setModel] = useState<ModelInfo | null>(null);
  const [items, setItems] = useState<Item[]>([]);
  const [current, setCurrent] = useState<string | null>(null);
  const [th, setTh] = useState<Thresholds | null>(null);
  const [visible, setVisible] = useState<Record<CellClass, boolean>>({ RBC: true, WBC: true, Platelets: true });
  const [reviewMode, setReviewMode] = useState(false);
  const [addLabel, setAddLabel] = useState<CellClass>('RBC');
  const [selected, setSelected] = useState<number | null>(null);
  const [privateMode, setPrivateMode] = useState(false);
  // undefined: as the model was trained (its metadata), until the user says otherwise
  const [whiteBalance, setWhiteBalance] = useState<boolean | undefined>(undefined);
  const [busy, setBusy] = useState<string | null>(null);
  const [errors, setErrors] = useState<string[]>([]);
  const [restored, setRestored] = useState(false);
  const [sample, setSample] = useState({ name: 'sample', reviewer: '', rbcCount: '' });
  const fileInput = useRef<HTMLInputElement>(null);

  useEffect(() => {
    (async () => {
      const info: ModelInfo = await fetch('/api/model').then((r) => r.json());
      setModel(info);
      const saved = await restore();
      if (saved && saved.model === info.sha256) {
        setItems(saved.items);
        setCurrent(saved.current);
        setTh(saved.thresholds);
        if (saved.sample) setSample(saved.sample);
      } else setTh({ count: { ...info.metadata.thresholds }, review: { ...info.metadata.review } });
      // a private session stays private, even when the server's model has changed since
      if (saved?.privateMode) {
        setPrivateMode(true);
        preparePrivateMode();
      }
      setRestored(true);
    })().catch((e) => setErrors([`cannot reach the hemocount server: ${e.message}`]));
  }, []);

  useEffect(() => {
    if (restored && model) save({ items, thresholds: th, current, model: model.sha256, sample, privateMode }).catch(() => {});
  }, [items, th, current, restored, sample, privateMode]);

  const reviewed = useMemo(() => {
    const m = new Map<string, Reviewed>();
    if (th) for (const it of items) if (!it.error) m.set(it.id, review(it.candidates, it.mode === 'labels' ? LABEL_THRESHOLDS : th, it.corrections));
    return m;
  }, [items, th]);

  const item = items.find((i) => i.id === current) ?? null;
  const rv = item ? reviewed.get(item.id) : undefined;
  const sum = (f: (r: Reviewed) => Record<CellClass, number>) => perClass((c) => [...reviewed.values()].reduce((s, r) => s + f(r)[c], 0));
  const batchDetected = sum((r) => r.detected);
  const batchCorrected = sum((r) => r.corrected);

  async function addFiles(files: File[]) {
    if (!files.length) return;
    setErrors([]);
    const labelled = await labelledItems(files);
    // the same picture twice would count its cells twice in the sample's totals
    const have = (f: File) => items.some((i) => i.mode !== 'labels' && i.name === f.name && i.blob.size === f.size);
    const again = labelled.rest.filter(have);
    const fresh = labelled.rest.filter((f) => !have(f));
    const counted = fresh.length ? await countFiles(fresh, privateMode, setBusy, model?.limits?.maxPixels, whiteBalance) : { added: [], errs: [] };
    const added = [...labelled.added, ...counted.added];
    setBusy(null);
    setErrors([...labelled.errs, ...again.map((f) => `${f.name}: already in this sample, not added again`), ...counted.errs]);
    const [first] = added;
    if (first) {
      setItems((xs) => [...xs, ...added]);
      setCurrent(first.id);
      setSelected(null);
    }
  }

  const update = (f: (i: Item) => Item) => item && setItems((xs) => xs.map((x) => (x.id === item.id ? f(x) : x)));
  const stamp = () => ({ by: sample.reviewer.trim() || undefined, at: new Date().toISOString() });
  // a field is reviewed once a person has decided all its doubtful cells (or marks it so
  // after the last correction): deciding one of fifteen, or an undo, leaves it to review
  const correct = (f: (c: Item['corrections']) => Item['corrections']) =>
    update((x) => {
      const corrections = f(x.corrections);
      const left = review(x.candidates, x.mode === 'labels' ? LABEL_THRESHOLDS : th!, corrections).uncertain;
      return { ...x, corrections, reviewed: CLASSES.every((c) => left[c] === 0) ? stamp() : undefined };
    });
  const sel = rv?.detections.find((d) => d.id === selected) ?? null;

  function deleteSelected() {
    if (!sel) return;
    if (sel.id < 0) correct((c) => ({ ...c, added: c.added.filter((_, k) => k !== -1 - sel.id) }));
    else correct((c) => ({ ...c, deleted: [...c.deleted, sel.id] }));
    setSelected(null);
  }
  function relabel(label: CellClass) {
    if (!sel) return;
    if (sel.id < 0) correct((c) => ({ ...c, added: c.added.map((a, k) => (k === -1 - sel.id ? { ...a, label } : a)) }));
    else correct((c) => ({ ...c, relabeled: { ...c.relabeled, [sel.id]: label } }));
  }
  useEffect(() => {
    const onKey = (e: KeyboardEvent) => {
      if (!reviewMode || (e.target as HTMLElement).tagName === 'INPUT') return;
      if (e.key === 'Delete' || e.key === 'Backspace') deleteSelected();
      if (e.key === 'a' && sel?.uncertain) correct((c) => ({ ...c, accepted: [...c.accepted, sel.id] }));
      if (e.key === 'r' && sel?.uncertain) correct((c) => ({ ...c, rejected: [...c.rejected, sel.id] }));
    };
    window.addEventListener('keydown', onKey);
    return () => window.removeEventListener('keydown', onKey);
  });

  const rbcCountOk = sample.rbcCount.trim() === '' || rbcPerUl(sample) !== null;
  const doc = (list: Item[]) => sampleDocument(list, reviewed, model!, th!, sample);

  async function exportReport() {
    const d = doc(items);
    const thumbs: Record<string, string> = {};
    for (const i of items.filter((x) => !x.error)) thumbs[i.name] = await thumbnail(i, reviewed.get(i.id)!.detections, visible);
    download(
      `${stem(sample.name.trim() || 'sample')}.report.html`,
      renderSampleReport(d, { format: 'html', thumbs, generated: new Date().toISOString() }),
      'text/html',
    );
  }

  const exportPng = async (i: Item) => download(`${stem(i.name)}.annotated.png`, await annotatedPng(i, reviewed.get(i.id)!.detections, visible));
  const boxesOf = (i: Item) => reviewed.get(i.id)!.detections.filter((d) => !d.uncertain);
  // cells still to review go to VOC as difficult (as `count --voc` writes them): undecided, not background
  const vocOf = (i: Item) => toVoc(i.name, i.width, i.height, reviewed.get(i.id)!.detections);

  if (!th || !model) return <div class="loading">{errors[0] ?? 'loading model...'}</div>;
  const r = ratios(batchCorrected);
  const summary = items.some((i) => !i.error) ? doc(items).samples?.[0] : undefined;

  return (
    // biome-ignore lint/a11y/noStaticElementInteractions: dropping files anywhere on the page is a shortcut; "Add images..." is the accessible way
    <div
      class="app"
      onDragOver={(e) => e.preventDefault()}
      onDrop={(e) => {
        e.preventDefault();
        addFiles([...(e.dataTransfer?.files ?? [])]);
      }}
    >
      <header>
        <h1>hemocount</h1>
        <span class="model" title={`sha256 ${model.sha256}`}>
          {model.name} {model.version} <small>{model.sha256.slice(0, 12)}</small>
        </span>
        <button
          type="button"
          title="Smear images; an image added with a VOC .xml of the same name opens with that file's labels, to review"
          onClick={() => fileInput.current!.click()}
        >
          Add images...
        </button>
        <input
          ref={fileInput}
          type="file"
          multiple
          accept="image/*,.xml"
          data-testid="file"
          style={{ display: 'none' }}
          onChange={(e) => {
            const f = [...((e.target as HTMLInputElement).files ?? [])];
            (e.target as HTMLInputElement).value = '';
            addFiles(f);
          }}
        />
        <label class="toggle" title="Run the model in this browser: images never leave the machine">
          <input
            type="checkbox"
            data-testid="private"
            checked={privateMode}
            onChange={(e) => {
              const on = (e.target as HTMLInputElement).checked;
              setPrivateMode(on);
              // load the runtime and the model while the user picks images
              if (on) preparePrivateMode();
            }}
          />{' '}
          private mode
        </label>
        <label
          class="toggle"
          title="Make the smear's background grey before counting the next images: for a lamp's colour the camera was not white-balanced for (costs accuracy where colours are right)"
        >
          <input
            type="checkbox"
            data-testid="white-balance"
            checked={whiteBalance ?? model?.metadata.input.white_balance === 'background'}
            onChange={(e) => setWhiteBalance((e.target as HTMLInputElement).checked)}
          />{' '}
          white balance
        </label>
        <span class="mode" data-testid="mode">
          {item
            ? `${
                item.mode === 'labels'
                  ? `labels from ${stem(item.name)}.xml (difficult objects: to review)`
                  : item.mode === 'private'
                    ? 'counted in this browser (private)'
                    : 'counted on the server'
              }; next images: ${privateMode ? 'in this browser' : 'on the server'}`
            : privateMode
              ? 'next images: in this browser'
              : 'next images: on the server'}
        </span>
        {busy && (
          <span class="busy" data-testid="busy">
            {busy}
          </span>
        )}
        <button
          type="button"
          class="danger"
          onClick={() => {
            if (confirm('Remove all images and corrections?')) {
              setItems([]);
              setCurrent(null);
            }
          }}
        >
          Clear
        </button>
      </header>
      <aside>
        <ThresholdsPanel th={th} setTh={setTh} visible={visible} setVisible={setVisible} meta={model.metadata} />
        {item && rv && <ImageCounts rv={rv} fromLabels={item.mode === 'labels'} />}
        <section>
          <h2>Review</h2>
          <label>
            <input
              type="checkbox"
              data-testid="review-mode"
              checked={reviewMode}
              onChange={() => {
                setReviewMode(!reviewMode);
                setSelected(null);
              }}
            />{' '}
            review mode
          </label>
          <p class="hint">Click a box to select it; drag on empty space to add a cell; wheel zooms, Alt+drag pans, double-click fits.</p>
          <div>
            add as:{' '}
            {CLASSES.map((c) => (
              <label>
                <input type="radio" name="add" checked={addLabel === c} onChange={() => setAddLabel(c)} />
                {c}{' '}
              </label>
            ))}
          </div>
          {sel && (
            <div class="selected" data-testid="selected">
              <div>
                {sel.label} {sel.added ? '(added)' : sel.score.toFixed(3)} {sel.uncertain ? '(to review)' : ''}
              </div>
              <button type="button" data-testid="delete" onClick={deleteSelected}>
                Delete
              </button>
              {CLASSES.filter((c) => c !== sel.label).map((c) => (
                <button type="button" onClick={() => relabel(c)}>
                  Make {c}
                </button>
              ))}
              {sel.uncertain && (
                <>
                  <button type="button" data-testid="accept" onClick={() => correct((c) => ({ ...c, accepted: [...c.accepted, sel.id] }))}>
                    Accept
                  </button>
                  <button type="button" data-testid="reject" onClick={() => correct((c) => ({ ...c, rejected: [...c.rejected, sel.id] }))}>
                    Reject
                  </button>
                </>
              )}
            </div>
          )}
          {item && (
            <button type="button" onClick={() => correct(() => noCorrections())}>
              Undo all corrections
            </button>
          )}
        </section>
        {items.length > 0 && (
          <section>
            <h2>
              Sample ({items.length} field{items.length > 1 ? 's' : ''})
            </h2>
            <ul class="batch" data-testid="batch">
              {items.map((i) => {
                const x = reviewed.get(i.id);
                const pick = () => {
                  setCurrent(i.id);
                  setSelected(null);
                };
                return (
                  <li class={i.id === current ? 'current' : ''}>
                    <button type="button" class="link" onClick={pick}>
                      {i.name} <small>{x ? CLASSES.map((c) => x.corrected[c]).join(' / ') : i.error}</small>
                    </button>
                  </li>
                );
              })}
            </ul>
            <table class="counts" data-testid="totals">
              <tr>
                <th></th>
                <th>detected</th>
                <th>corrected</th>
              </tr>
              {CLASSES.map((c) => (
                <tr>
                  <td>{c}</td>
                  <td>{batchDetected[c]}</td>
                  <td data-testid={`total-${c}`}>{batchCorrected[c]}</td>
                </tr>
              ))}
            </table>
            <div data-testid="ratios">
              {r.rbcPerWbc !== null ? `RBC : WBC : PLT = ${fmt(r.rbcPerWbc)} : 1 : ${fmt(r.pltPerWbc, 2)}` : 'no white cell counted: no ratio to white cells'}
              {r.rbcPerPlt !== null ? ` (RBC/PLT ${fmt(r.rbcPerPlt)})` : ''}
            </div>
            <SampleForm sample={sample} setSample={setSample} rbcCountOk={rbcCountOk} summary={summary} />
            {item && (
              <button type="button" data-testid="mark-reviewed" onClick={() => update((x) => ({ ...x, reviewed: stamp() }))}>
                {item.reviewed ? 'Reviewed' : 'Mark this field reviewed'}
              </button>
            )}
          </section>
        )}
        {item && (
          <section>
            <h2>Export</h2>
            <button type="button" data-testid="export-png" onClick={() => exportPng(item)}>
              Annotated PNG
            </button>
            <button type="button" data-testid="export-json" onClick={() => download('hemocount.json', JSON.stringify(doc(items), null, 1), 'application/json')}>
              JSON
            </button>
            <button type="button" data-testid="export-csv" onClick={() => download('hemocount.csv', toCsv(doc(items)), 'text/csv')}>
              CSV
            </button>
            <button
              type="button"
              data-testid="export-samples-csv"
              onClick={() => download('hemocount.samples.csv', toSamplesCsv(doc(items).samples ?? []), 'text/csv')}
            >
              Sample CSV
            </button>
            <button type="button" data-testid="export-report" onClick={exportReport}>
              Sample report
            </button>
            <button type="button" data-testid="export-voc" onClick={() => download(`${stem(item.name)}.xml`, vocOf(item), 'application/xml')}>
              VOC XML
            </button>
            <button
              type="button"
              data-testid="export-coco"
              onClick={() =>
                download(
                  'hemocount.coco.json',
                  toCoco(items.filter((i) => !i.error).map((i) => ({ file: i.name, width: i.width, height: i.height, boxes: boxesOf(i) }))),
                  'application/json',
                )
              }
            >
              COCO JSON
            </button>
          </section>
        )}
      </aside>
      <main>
        {errors.length > 0 && (
          <div class="errors" data-testid="errors">
            {errors.map((e) => (
              <div>{e}</div>
            ))}
            <button type="button" onClick={() => setErrors([])}>
              dismiss
            </button>
          </div>
        )}
        {item && rv ? (
          <Viewer
            blob={item.blob}
            width={item.width}
            height={item.height}
            detections={rv.detections}
            visible={visible}
            reviewMode={reviewMode}
            selected={selected}
            onSelect={setSelected}
            onAdd={(box: Box) => correct((c) => ({ ...c, added: [...c.added, { label: addLabel, box }] }))}
            fromLabels={item.mode === 'labels'}
          />
        ) : (
          <button type="button" class="drop" onClick={() => fileInput.current!.click()}>
            Drop smear images here, or click to choose.
            <br />
            <small>JPEG, PNG, TIFF, WebP, GIF or AVIF</small>
          </button>
        )}
      </main>
    </div>
  );
}

render(<App />, document.getElementById('app')!);
