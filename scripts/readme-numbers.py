"""Refreshes the README's accuracy and speed sections from docs/validation/evaluate.json
and docs/speed.json (both written by scripts in this repo). Usage: python3 scripts/readme-numbers.py"""
import json
import re

rep = json.load(open("docs/validation/evaluate.json"))
sp = json.load(open("docs/speed.json"))
large = json.load(open("docs/large.json"))
pct = lambda v: "-" if v is None else f"{100 * v:.1f}"  # noqa: E731


def half_up(v):
    """One decimal, halves rounded up, as the model card's JavaScript toFixed does (85.25 -> 85.3)."""
    from decimal import ROUND_HALF_UP, Decimal
    return str(Decimal(repr(v)).quantize(Decimal("0.1"), rounding=ROUND_HALF_UP))


acc_doc = json.load(open("docs/accuracy.json"))
prev = json.load(open("docs/validation/previous-release.json"))
# the int8 gate's table: (subset, metric) -> (fp32, int8)
gate = {}
for line in open("docs/validation/int8-gate.txt"):
    m = re.match(r"(\S+)\s+(mAP@0\.5|F1 \S+)\s+([\d.]+) ->\s+([\d.]+)", line)
    if m:
        gate[(m[1], m[2])] = (float(m[3]), float(m[4]))


def table(r):
    rows = ["| class | threshold | precision | recall | F1 | count accuracy | AP@0.5 | counted / expert | Pearson r |",
            "|---|---|---|---|---|---|---|---|---|"]
    for k in ("RBC", "WBC", "Platelets"):
        a, e, g = r["atModel"][k], r["evaluation"]["classes"][k], r["agreement"][k]
        rows.append(f"| {k} | {r['thresholds'][k]:.2f} | {pct(a['precision'])} | {pct(a['recall'])} | {pct(a['f1'])} | "
                    f"{pct(a['accuracy'])} | {pct(e['ap50'])} | {a['counted']} / {a['truth']} | "
                    f"{'-' if g['pearson'] is None else format(g['pearson'], '.3f')} |")
    return "\n".join(rows) + f"\n\n{r['evaluation']['images']} images, mAP@0.5 {pct(r['evaluation']['mAP50'])} %."


subs = rep.get("subsets", {})
# what a user of the default (int8) model sees on the full fields: its counts at its thresholds
try:
    i8 = json.load(open("docs/validation/evaluate-int8.json"))["subsets"]["full-field"]["atModel"]
    int8_counts = "; its counts there, counted / expert: " + ", ".join(
        f"{k} {i8[k]['counted']} / {i8[k]['truth']} ({pct(i8[k]['accuracy'])} %)" for k in ("RBC", "WBC", "Platelets"))
except FileNotFoundError:
    int8_counts = ""
pf = prev.get("subsets", {}).get("full-field")
sweep = acc_doc["scaleSweep"]
scales = sorted(sweep, key=float)
sweep_rows = ["| class | " + " | ".join(f"{s}x" for s in scales) + " |", "|---|" + "---|" * len(scales)]
for k in ("RBC", "WBC", "Platelets"):
    cells = [f"{half_up(sweep[s]['auto']['full-field'][k])} ({half_up(sweep[s]['off']['full-field'][k])})" for s in scales]
    sweep_rows.append(f"| {k} | " + " | ".join(cells) + " |")
acc = (f"**Full-field smears** (whole fields of view, the images labs take):\n\n{table(subs['full-field'])}\n\n"
       + ("The previous release on the same fields: " + ", ".join(
           f"{k} F1 {pct(pf['atModel'][k]['f1'])} %" for k in ("RBC", "WBC", "Platelets")) + ".\n\n" if pf else "")
       + f"**Close-ups** (TXL-PBC, one white cell and its neighbours):\n\n{table(subs['close-up'])}\n\n"
       + "**Magnification**: F1 [%] on the full-field smears resized to each scale, with `--scale auto` "
       "(in brackets: `--scale 1`, no rescaling):\n\n" + "\n".join(sweep_rows) + "\n\n"
       + f"Test-time augmentation (`--tta`) costs {acc_doc['tta']['costRatio']}x the time; its effect on full-field F1: "
       + ", ".join(f"{k} {acc_doc['tta']['plain']['full-field'][k]} -> {acc_doc['tta']['tta']['full-field'][k]}" for k in ("RBC", "WBC", "Platelets"))
       + ". Targets, what is not met yet and why: [the model card](models/MODEL_CARD.md).\n\n"
       + "These are the fp32 network's figures (`--model fp32`). The default model is its int8 version, which the "
       + "release gates to lose no more than 0.5 points against them on any subset; on the full fields: "
       + ", ".join(f"{k} F1 {gate[('full-field', 'F1 ' + k)][1]:.2f} %" for k in ("RBC", "WBC", "Platelets"))
       + " (`docs/validation/int8-gate.txt`)" + int8_counts + ".")
f, c, s = sp["forward_640x480_ms"], sp["count_per_image_ms"], sp["sweep"]
none = {"p50": "-", "p90": "-"}
c8 = sp.get("count_per_image_int8_ms") or none
c1, c81 = sp.get("count_per_image_scale1_ms") or none, sp.get("count_per_image_int8_scale1_ms") or none
cur, old = large["current"], large["firstRelease"]


def diff(a):
    return ", ".join(f"{k} {v:+.2f} %" for k, v in a["differencePct"].items())


q8 = sp.get("forward_int8_vs_fp32_ms") or {"int8_p50": "-", "fp32_p50": "-"}
speed = f"""Measured on this project's CI-class machine ({sp['machine']}); p50 / p90 per image, the
default int8 model and the fp32 network it is quantised from, in one run (`npm run bench`):

| what | int8 (default) | fp32 (`--model fp32`) |
|---|---|---|
| network forward pass, 640 x 480 (padded to {f['input'].split(' ')[0]}), p50 | {q8['int8_p50']} ms | {q8['fp32_p50']} ms |
| whole count of a sample image (read, decode, network, decoding, NMS; `--scale auto`) | {c8['p50']} / {c8['p90']} ms | {c['p50']} / {c['p90']} ms |
| whole count, one pass at native size (`--scale 1`) | {c81['p50']} / {c81['p90']} ms | {c1['p50']} / {c1['p90']} ms |

Without VNNI (AVX2 only) int8 gains less: x1.3-1.5 over fp32 on this project's earlier hosts,
against x{q8.get('speedup', '-')} here (below).

A {large['image']} smear is counted in {cur['seconds']} s ({cur['tiles']} tiles of {cur['tiling'].split(' px')[0]} px) with a peak of
{cur['maxRssMB']} MB; the first release's tiling (1024 px tiles, 320 px overlap: {old['tiles']} tiles) took
{old['seconds']} s in the same run, **x{large['speedup']}**; with the default int8 model, {large['int8']['seconds']} s and
{large['int8']['maxRssMB']} MB (`node dist/bench/large.js --out docs/large.json`); its red cells there: {large['int8']['counts']['RBC']} against
fp32's {cur['counts']['RBC']}. The smear repeats one 640 x 480 sample field about {round(cur['width'] / 640 * cur['height'] / 480)} times, so
a single borderline cell of that field that one model scores above the threshold and the other below counts that many times.
Tiled counts against one network pass over a 4000 x 3000 smear: {diff(large['agreement'][0])}
(the first release's tiling: {diff(large['agreement'][1])}; the default int8 model with the current tiling:
{diff(large['agreement'][2]) if len(large['agreement']) > 2 else '-'}). Evaluating {s['images']} annotated sample images takes
{s['evaluation_pass_ms'] / 1000:.1f} s; the whole 14-threshold sweep on top of it costs {s['sweep_ms']:.0f} ms
(x{s['ratio_pass_plus_sweep_to_pass']} of one evaluation pass), because thresholds are applied to stored candidates.
This project's 2-core machines are not all alike, though all are called "AMD EPYC": until
2026-11-26 they were AVX2 hosts without VNNI, where this network's forward pass took 33-57 ms
from session to session, int8 was x1.3-1.5 faster than fp32, a 12000 x 9000 smear took 21.8 s
with int8 and 100 CBC smears ran at 24.8 images/s (int8, no pictures; `docs/*.json` at commit
b2dc2dd); the AVX-512 VNNI host named above is about three times faster. Every benchmark file
names its machine; compare ratios taken in one run."""
try:
    br = json.load(open("docs/browser.json"))
    f32 = br["results"]["fp32"]
    d0 = (br["results"]["int8"].get("disagreements") or [{}])[0]
    k0 = next((k for k in ("RBC", "WBC", "Platelets") if d0 and d0["browser"][k] != d0["server"][k]), "RBC")
    names = {"RBC": "red cells", "WBC": "white cells", "Platelets": "platelets"}
    dis = (f"{d0['image']}: {d0['browser'][k0]} {names[k0]} against {d0['server'][k0]}" if d0 else "no disagreement")
    speed += f"""

**The browser's private mode** (`npm run bench:browser`: headless Chromium {br['chromium']}, loopback, a fresh
browser context, the machine shared with other work): first image {f32['firstImageMs']['median'] / 1000:.1f} s (loading the runtime and
model {f32['firstImageParts']['load'] / 1000:.1f} s, then its first pass), then {f32['perImage640x480Ms']['p50']:.0f} ms per 640 x 480 image (p50) with the
fp32 model; counts agree with the server's. Private mode runs the server's model, so with the default int8
model it takes x{br['ratios']['int8VsFp32']['perImage640x480']} of that time per image; int8 and fp32 can differ by a cell or two on a
field, in the browser as on the server ({dis}). The model
is content-addressed and cached as immutable; onnxruntime-web's files are served with ETags and, to
other hosts than loopback, brotli or gzip."""
except FileNotFoundError:
    pass
eager = sp.get("pytorch_eager_same_weights") or {}
if "per_image_ms" in eager:
    speed += f"""

**Against PyTorch eager** on the same weights and sample images (Debian's torch {eager['torch']},
{eager['threads']} threads; `python3 -m hemocount_train eager-bench`): {eager['per_image_ms']['p50']} ms per image
p50, end to end (read, decode, network, decoding, NMS), one pass at native resolution. Doing the
same work (`--scale 1`), hemocount's count is **x{eager['hemocount_speedup_p50']}** faster with the same fp32 weights
and **x{eager.get('hemocount_int8_speedup_p50', '-')}** with the default int8 model, in the same run; with `--scale auto` (the default,
which spends extra passes on images outside the training magnification, here the close-ups)
x{eager.get('hemocount_scale_auto_speedup_p50', '-')} with fp32."""
    try:
        st = json.load(open("docs/stages.json"))["p50_ms"]
        five = eager["per_image_ms"]["p50"] / 5
        speed += f"""
Where the int8 count's time goes (`npm run bench:stages`, each stage timed alone, p50 over the
samples, a separate run): reading the file {st['read file']} ms, its size from the header
{st['size']} ms, decoding the JPEG {st['decode image']} ms, the input tensor {st['tensor']} ms, the network
{st['network']} ms, box decoding and NMS {st['boxes + NMS']} ms; the whole count {st['whole count']} ms. Five times
faster than eager is {five:.1f} ms; the network and the JPEG decoding take most of it. (The int8 model's input is
the 8-bit image itself, so the tensor step only copies pixels and pads; its first convolution normalises.)"""
    except FileNotFoundError:
        pass
q8 = sp.get("forward_int8_vs_fp32_ms")
if q8:
    speed += f"""

**int8**, the default model (`--model fp32` selects the full-precision network): the same network with static QDQ int8 quantisation
(`scripts/quantize.py --uint8-input`, activations calibrated on training images only; its input is the 8-bit image itself, its normalisation folded
into the first convolution; the class logits' convolution kept float), {q8['int8_mb']} MiB instead of
{q8['fp32_mb']} MiB. Forward pass p50, in alternating blocks of 10 runs in the same run: fp32 {q8['fp32_p50']} ms, int8
{q8['int8_p50']} ms, **{q8['speedup']}x**. Its accuracy against fp32 on the validation split (the release
gate: mAP@0.5 and each class's F1 no more than 0.5 points below fp32's, on each subset): `docs/validation/int8-gate.txt`. Per
field the two can differ by a cell or two (one more or one fewer borderline cell above a threshold)."""
try:
    tp = json.load(open("docs/throughput.json"))
    speed += f"""

**A folder of {tp['images']} CBC smears** (640 x 480; `npm run bench:throughput`, wall time of the whole
command, best of 2), images/s: """ + "; ".join(f"{k} **{v['imagesPerS']}**" for k, v in tp["results"].items()) + "."
except FileNotFoundError:
    pass
try:
    qb = json.load(open("docs/queue.json"))
    r = qb["results"]
    speed += f"""

**Scale-out** (`npm run bench:queue`: {qb['images']} CBC smears, Redis + BullMQ workers on this machine, {qb.get('model', 'the fp32 model')},
wall time of the whole command): """ + "; ".join(f"{k} {v['imagesPerS']} images/s" for k, v in r.items()) + f""".
Two single-threaded workers against one: x{qb['ratio2to1']}."""
except FileNotFoundError:
    pass
try:
    ag = json.load(open("docs/against.json"))
    speed += f"""

**Against an earlier build, side by side** (`node dist/bench/against.js --base DIR`: both CLIs on the
same {ag['images']} CBC smears and the 12000 x 9000 smear, alternating, best of 3; this build {ag['this']['commit']} against
{ag['base']['commit']}, {ag['machine']}): """ + "; ".join(
        f"{k} {v['baseSeconds']} s -> {v['thisSeconds']} s, **x{v['speedup']}**" if "speedup" in v
        else f"{k} {v['thisSeconds']} s (not in {ag['base']['commit']})" for k, v in ag["results"].items()) + """.
The figures above come from other runs; this shared machine's speed drifts by 20-30 % between
runs, which is why only ratios within one run compare."""
except FileNotFoundError:
    pass
import subprocess  # noqa: E402  (the sample output is made after the tables above)
out = subprocess.run(["node", "bin/hemocount.js", "count", "samples/BloodImage_00011.jpg", "--json", "-", "--quiet"],
                     capture_output=True, text=True, check=True).stdout
doc = json.loads(out)
im = doc["images"][0]
dets = sorted(im["detections"], key=lambda d: (d["label"] != "WBC", d["label"] != "Platelets", -d["score"]))[:3]
j = lambda o: json.dumps(o).replace('{"', '{ "').replace('}', ' }').replace('":', '":').replace(', "', ', "')  # noqa: E731
det_lines = ",\n".join(f"        {j(d)}" for d in dets)
example = f"""```json
{{
  "model": {{ "name": "{doc['model']['name']}", "version": "{doc['model']['version']}", "sha256": "{doc['model']['sha256'][:16]}…" }},
  "thresholds": {j(doc['thresholds'])},
  "review": {j(doc['review'])},
  "images": [
    {{
      "file": "samples/BloodImage_00011.jpg", "width": {im['width']}, "height": {im['height']},
      "counts": {j(im['counts'])},
      "uncertain": {j(im['uncertain'])},
      "meanScore": {j(im['meanScore'])},
      "detections": [
{det_lines},
        "…"
      ],
      "scale": {im['scale']}, "tiles": 1, "ms": {im['ms']}
    }},
    {{ "file": "broken.jpg", "width": 0, "height": 0, "counts": {{ "RBC": 0, "WBC": 0, "Platelets": 0 }},
      "uncertain": {{ "RBC": 0, "WBC": 0, "Platelets": 0 }}, "meanScore": {{ "RBC": null, "WBC": null, "Platelets": null }},
      "detections": [], "error": "corrupt or truncated image (VipsJpeg: premature end of JPEG image)" }}
  ],
  "totals": {{ "images": 1, "failed": 1, "counts": {j(doc['totals']['counts'])}, "uncertain": {j(doc['totals']['uncertain'])} }}
}}
```
"""
t = open("README.md").read()
a = t.index("```json\n{\n  \"model\"")
b = t.index("```\n", a + 10) + 4
t = t[:a] + example + t[b:]
t = re.sub(r"<!-- accuracy:start -->.*?<!-- accuracy:end -->", lambda m: f"<!-- accuracy:start -->\n{acc}\n<!-- accuracy:end -->", t, flags=re.S)
t = re.sub(r"<!-- speed:start -->.*?<!-- speed:end -->", lambda m: f"<!-- speed:start -->\n{speed}\n<!-- speed:end -->", t, flags=re.S)
open("README.md", "w").write(t)
print("README numbers refreshed")
