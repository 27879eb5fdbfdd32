#!/usr/bin/python3
"""How counts hold up when a smear's stain or illumination, or the camera, differs from the
training smears'. Writes the validation split with each image changed in one fixed way (stain:
paler, faded, grey, over-stained, brighter, flatter; camera: sensor noise, strong JPEG, defocus,
half the resolution; light: the lamp's colour, not white-balanced) and scores a model on each with `hemocount evaluate`, so the figures are
hemocount's own (F1 at the model's thresholds, IoU 0.5, per subset).

    /usr/bin/python3 scripts/stain-sweep.py [--set stain|camera|light] [--model M] [--white-balance on|off] [--data training/splits/val.json] [--out FILE]

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


# (name, operation): how another camera or objective may record the same smear (--set camera)
CAMERA = [
    ("as taken", None),
    ("sensor noise (sigma 4 %)", ("noise", 0.04)),
    ("sensor noise (sigma 8 %)", ("noise", 0.08)),
    ("strong JPEG (quality 30)", ("jpeg", 30)),
    ("out of focus (blur sigma 2 px)", ("blur", 2.0)),
    ("half the resolution, upsampled", ("resolution", 0.5)),
]

# (name, operation): the lamp's colour recorded as it is, by a camera whose white balance was
# not set for it (--set light); gains per channel (R, G, B) on the 8-bit values
LIGHT = [
    ("as taken", None),
    ("warm lamp (R x1.08, B x0.80)", ("cast", (1.08, 1.0, 0.80))),
    ("halogen, no white balance (R x1.12, G x0.96, B x0.65)", ("cast", (1.12, 0.96, 0.65))),
    ("cool light (R x0.85, B x1.05)", ("cast", (0.85, 1.0, 1.05))),
    ("green tint (G x1.08)", ("cast", (1.0, 1.08, 1.0))),
]


def camera(src: str, dst: str, op) -> None:
    import zlib

    import numpy as np
    from PIL import ImageFilter
    with Image.open(src) as im:
        im = im.convert("RGB")
        quality = 95
        kind, k = op or (None, None)
        if kind == "noise":  # independent per pixel and channel; the same for an image run to run
            rng = np.random.default_rng(zlib.crc32(os.path.basename(src).encode()))
            a = np.asarray(im, dtype=np.float32) + rng.normal(0.0, 255 * k, (im.size[1], im.size[0], 3))
            im = Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8))
        elif kind == "cast":
            a = np.asarray(im, dtype=np.float32) * np.array(k, np.float32)
            im = Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8))
        elif kind == "jpeg":
            quality = k
        elif kind == "blur":
            im = im.filter(ImageFilter.GaussianBlur(k))
        elif kind == "resolution":
            w, h = im.size
            im = im.resize((round(w * k), round(h * k)), Image.BILINEAR).resize((w, h), Image.BILINEAR)
        im.save(dst, quality=quality)


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
    ap.add_argument("--white-balance", choices=["on", "off"], help="passed to hemocount evaluate (default: as the model was trained)")
    ap.add_argument("--set", choices=["stain", "camera", "light"], default="stain",
                    help="stain: stain and illumination (default); camera: noise, JPEG, focus, resolution; light: the lamp's colour")
    a = ap.parse_args(argv)
    coco = json.load(open(a.data))
    base = os.path.dirname(os.path.abspath(a.data))
    rows = []
    with tempfile.TemporaryDirectory(prefix="hemocount-stain-") as tmp:
        sweep = CHANGES if a.set == "stain" else [(name, op, None, None) for name, op in (CAMERA if a.set == "camera" else LIGHT)]
        for name, b, c, s in sweep:
            d = os.path.join(tmp, str(len(rows)))
            os.mkdir(d)
            images = []
            for im in coco["images"]:
                dst = os.path.join(d, f"{im['id']}.jpg")
                if a.set == "stain":
                    changed(os.path.join(base, im["file_name"]), dst, b, c, s)
                else:
                    camera(os.path.join(base, im["file_name"]), dst, b)
                images.append({**im, "file_name": dst})
            ann = os.path.join(d, "val.json")
            json.dump({**coco, "images": images}, open(ann, "w"))
            r = subprocess.run(["node", os.path.join(ROOT, "bin", "hemocount.js"), "evaluate", "--data", ann, "--model", a.model,
                                "--json", "-", "--quiet", *(["--white-balance", a.white_balance] if a.white_balance else [])],
                               capture_output=True, text=True, cwd=ROOT)
            if r.returncode != 0:
                sys.exit(f"evaluate failed on '{name}': {r.stderr.strip()[-500:]}")
            doc = json.loads(r.stdout)
            row = {"change": name, **({"brightness": b, "contrast": c, "saturation": s} if a.set == "stain" else {"operation": b})}
            for sub, rep in doc["subsets"].items():
                row[sub] = {k: round(100 * v["f1"], 1) for k, v in rep["atModel"].items()}
            rows.append(row)
            cells = [f"{sub} " + " ".join(f"{k} {v:5.1f}" for k, v in row[sub].items()) for sub in doc["subsets"]]
            print(f"{name:36s} " + "  ".join(cells), flush=True)
    if a.out:
        json.dump({"model": a.model, "data": os.path.relpath(a.data, ROOT), "metric": "F1 % at the model's thresholds, IoU 0.5",
                   **({"white_balance": a.white_balance} if a.white_balance else {}),
                   "rows": rows}, open(a.out, "w"), indent=1)


if __name__ == "__main__":
    main()
