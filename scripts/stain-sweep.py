#!/usr/bin/python3
"""How counts hold up when a smear's stain or illumination differs from the training smears.
Writes the validation split with each image changed in one fixed way (paler, faded, grey,
over-stained, brighter, flatter) and scores a model on each with `hemocount evaluate`, so the
figures are hemocount's own (F1 at the model's thresholds, IoU 0.5, per subset).

    /usr/bin/python3 scripts/stain-sweep.py [--model M] [--data training/splits/val.json] [--out docs/validation/stain-sweep.json]

Needs Pillow (Debian's python3-pil) and a built checkout (`npm run build`).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

from PIL import Image, ImageEnhance

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# (name, brightness, contrast, colour saturation): one change of the kind smears differ by
CHANGES = [
    ("as taken", 1.0, 1.0, 1.0),
    ("paler (brighter, half the colour)", 1.15, 0.8, 0.5),
    ("faded (a third of the colour)", 1.0, 1.0, 0.33),
    ("grey (no colour)", 1.0, 1.0, 0.0),
    ("over-stained (darker, more colour)", 0.8, 1.2, 1.5),
    ("brighter (lamp up 30 %)", 1.3, 1.0, 1.0),
    ("flatter (60 % contrast)", 1.0, 0.6, 1.0),
]


def changed(src: str, dst: str, b: float, c: float, s: float) -> None:
    with Image.open(src) as im:
        im = im.convert("RGB")
        for enh, k in ((ImageEnhance.Brightness, b), (ImageEnhance.Contrast, c), (ImageEnhance.Color, s)):
            if k != 1.0:
                im = enh(im).enhance(k)
        im.save(dst, quality=95)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="fp32", help="model to score (default: the bundled fp32 network)")
    ap.add_argument("--data", default=os.path.join(ROOT, "training", "splits", "val.json"))
    ap.add_argument("--out", help="write the table as JSON here")
    a = ap.parse_args(argv)
    coco = json.load(open(a.data))
    base = os.path.dirname(os.path.abspath(a.data))
    rows = []
    with tempfile.TemporaryDirectory(prefix="hemocount-stain-") as tmp:
        for name, b, c, s in CHANGES:
            d = os.path.join(tmp, str(len(rows)))
            os.mkdir(d)
            images = []
            for im in coco["images"]:
                dst = os.path.join(d, f"{im['id']}.jpg")
                changed(os.path.join(base, im["file_name"]), dst, b, c, s)
                images.append({**im, "file_name": dst})
            ann = os.path.join(d, "val.json")
            json.dump({**coco, "images": images}, open(ann, "w"))
            r = subprocess.run(["node", os.path.join(ROOT, "bin", "hemocount.js"), "evaluate", "--data", ann, "--model", a.model,
                                "--json", "-", "--quiet"], capture_output=True, text=True, cwd=ROOT)
            if r.returncode != 0:
                sys.exit(f"evaluate failed on '{name}': {r.stderr.strip()[-500:]}")
            doc = json.loads(r.stdout)
            row = {"change": name, "brightness": b, "contrast": c, "saturation": s}
            for sub, rep in doc["subsets"].items():
                row[sub] = {k: round(100 * v["f1"], 1) for k, v in rep["atModel"].items()}
            rows.append(row)
            cells = [f"{sub} " + " ".join(f"{k} {v:5.1f}" for k, v in row[sub].items()) for sub in doc["subsets"]]
            print(f"{name:36s} " + "  ".join(cells), flush=True)
    if a.out:
        json.dump({"model": a.model, "data": os.path.relpath(a.data, ROOT), "metric": "F1 % at the model's thresholds, IoU 0.5",
                   "rows": rows}, open(a.out, "w"), indent=1)


if __name__ == "__main__":
    main()
