"""Checkpoint -> ONNX with the decoding metadata embedded, plus a parity fixture:
torchvision's own post-processing on sample images, which the TypeScript decoder must
reproduce."""
from __future__ import annotations

import datetime
import hashlib
import json
import os
import subprocess

import torch

from . import model as M
from .data import CLASSES, VOCABULARY
from .train import load_rgb

COLOURS = {c["name"]: c["colour"] for c in VOCABULARY["classes"]}  # the paper's colours
PAPER_THRESHOLDS = {"RBC": 0.25, "WBC": 0.65, "Platelets": 0.35}
# For `count --scale auto` (src/core/detect.ts): the median red-cell size (square root of box
# area) of the full-field training smears is 96 px; images whose measured red cells fall
# outside 78-135 px are rescaled to it (135: the 575 x 575 close-ups' red cells, about 125 px,
# are counted best where they are; measured with bench/accuracy.ts on validation). `response`: measured size moves as true^0.65
# (boxes regress towards familiar sizes), measured with bench/accuracy.ts.
SCALE = {"reference_px": 96, "min_px": 78, "max_px": 135, "wbc_to_rbc": 2.0, "min_score": 0.4, "response": 0.65}


def git_commit():
    try:
        return subprocess.check_output(["git", "rev-parse", "HEAD"], stderr=subprocess.DEVNULL,
                                       cwd=os.path.dirname(__file__)).decode().strip()
    except Exception:  # noqa: BLE001 - not a git checkout
        return None


def scale_for(ck):
    """The magnification band `--scale auto` keeps: the shipped model's (its full fields' 96 px
    red cells) unless the run trained on a lab's own data (--data), whose red cells' median size
    is then the reference, the band scaled with it: a lab at another magnification must not have
    its images resized to the shipped model's scale."""
    cell, data = ck.get("cell_px"), (ck.get("config") or {}).get("data")
    if not cell or not data:
        return dict(SCALE)
    k = cell / SCALE["reference_px"]
    return {**SCALE, "reference_px": round(cell, 1), "min_px": round(SCALE["min_px"] * k, 1),
            "max_px": round(SCALE["max_px"] * k, 1)}


def weights_hash(model) -> str:
    """The first 8 hex digits of the sha256 of the network's tensors, in state_dict order."""
    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:8]


def metadata(model, ck, name):
    ag = model.anchor_generator
    return {
        "format": "hemocount-retinanet/2",  # 2: outputs.layout named (planar)
        "vocabulary": VOCABULARY["version"],
        "name": name,
        # the date, and the weights' hash: two exports of one day (two releases, or a release
        # and a re-export) are told apart by name and version, not only by the file's sha256
        "version": f"{datetime.date.today().isoformat()}+{weights_hash(model)}",
        "classes": [{"name": c, "colour": COLOURS[c]} for c in CLASSES],
        "input": {"layout": "NCHW", "channels": "RGB", "scale": 1 / 255, "mean": list(M.MEAN), "std": list(M.STD),
                  "pad_multiple": M.PAD_MULTIPLE, "pad_value": 0.0, "resize": "none (native resolution)",
                  # trained on images whose background was made grey: hemocount does the same before counting
                  **({"white_balance": "background"} if (ck.get("config") or {}).get("white_balance") else {})},
        "outputs": {"scores": "[1, anchors x classes] sigmoid probabilities",
                    "deltas": "[1, anchors x 4] box regression (dx, dy, dw, dh)",
                    "layout": "planar",
                    "order": "levels P3..P7, then anchor, class (or coordinate), y, x"},
        "anchors": {"levels": [{"name": f"P{i + 3}", "stride": st, "sizes": list(sz),
                                "aspect_ratios": list(ar)}
                               for i, (st, sz, ar) in enumerate(zip(M.STRIDES, ag.sizes, ag.aspect_ratios))],
                    "order": "aspect ratio outer, size inner (torchvision AnchorGenerator)",
                    "rounding": "base anchors rounded to integers"},
        "box_coder": {"weights": [1.0, 1.0, 1.0, 1.0], "clamp": float(model.box_coder.bbox_xform_clip)},
        "postprocess": {"score_floor": 0.05, "topk_per_level": model.topk_candidates, "nms_iou": model.nms_thresh,
                        "max_detections": model.detections_per_img, "class_wise_nms": True},
        "scale": scale_for(ck),
        "thresholds": dict(PAPER_THRESHOLDS),
        "review": {c: round(max(0.05, t - 0.15), 2) for c, t in PAPER_THRESHOLDS.items()},
        "provenance": {"arch": ck.get("arch"), "head_norm": ck.get("head_norm", "group"), "epochs": ck.get("epoch"), "seed": ck.get("seed"),
                       "batch_size": ck.get("batch_size"), "crop": ck.get("crop"), "lr": ck.get("lr"),
                       "train_images": ck.get("train_images"), "split": ck.get("split"),
                       "init": ck.get("init"), "frozen_bn": ck.get("frozen_bn", False), "config": ck.get("config"),
                       "parameters": M.count_parameters(model),
                       "backbone_widths": list(M.ARCHS[ck.get("arch")][0] or []) if ck.get("arch") in M.ARCHS else None,
                       "fpn_channels": model.backbone.out_channels, "convs_per_subnet": model.head_convs,
                       "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                       "git_commit": git_commit(), "validation": None},
    }


# Architecture candidates measured for speed (bench/architectures.ts): name -> (C1-C5
# widths, FPN channels, convs per subnet, stride-4 level). Only the network's forward pass
# is timed, so weights are random and anchors are not set up for the stride-4 level.
CANDIDATES = {
    "compact": ((16, 32, 48, 96, 160), 64, 2, False),
    "compact-wide": ((16, 32, 64, 128, 256), 64, 2, False),
    "compact, FPN 96": ((16, 32, 48, 96, 160), 96, 2, False),
    "compact, 3 convs per subnet": ((16, 32, 48, 96, 160), 64, 3, False),
    "compact, backbone x1.5": ((16, 32, 72, 144, 240), 64, 2, False),
    "compact + stride-4 level (P2)": ((16, 32, 48, 96, 160), 64, 2, True),
}


def conv_gflops(module, x):
    """Multiply-adds of every convolution x 2, for input x."""
    total = [0]

    def hook(m, _, out):
        total[0] += out.numel() * m.weight[0].numel()
    hooks = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        module(x)
    for h in hooks:
        h.remove()
    return 2 * total[0] / 1e9


def arch_candidates(out_dir, height=512, width=640):
    """Export each candidate (random weights) to out_dir; list params and GFLOP in candidates.json."""
    os.makedirs(out_dir, exist_ok=True)
    listed = []
    for i, (name, shape) in enumerate(CANDIDATES.items()):
        torch.manual_seed(0)
        net = M.build_model(name, shape=shape)
        wrapper = M.ExportWrapper(net).eval()
        widths, fpn, convs, p2 = shape
        x = torch.rand(1, 3, height, width)
        path = os.path.join(out_dir, f"candidate-{i}.onnx")
        torch.onnx.export(wrapper, (x,), path, input_names=["image"], output_names=["scores", "deltas"],
                          dynamic_axes={"image": {2: "height", 3: "width"}}, opset_version=17,
                          do_constant_folding=True, **legacy_exporter())
        listed.append({"name": name, "file": path, "backbone_widths": list(widths), "fpn_channels": fpn,
                       "convs_per_subnet": convs, "stride4_level": p2,
                       "parameters": M.count_parameters(net),
                       "gflop": round(conv_gflops(wrapper, x), 2), "input": f"{width}x{height}"})
    with open(os.path.join(out_dir, "candidates.json"), "w") as f:
        json.dump(listed, f, indent=1)
    return listed


def onnx_arch(path):
    """The architecture a hemocount ONNX file was exported from (its metadata's provenance)."""
    import onnx
    props = {p.key: p.value for p in onnx.load(path, load_external_data=False).metadata_props}
    return (json.loads(props.get("hemocount", "{}")).get("provenance") or {}).get("arch") or "compact"


def legacy_exporter():
    # PyTorch >= 2.5 defaults to the dynamo exporter; the TorchScript one handles the
    # dynamic H/W of this graph on every version (Debian's 1.13 has no such flag).
    import inspect
    return {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}


def load_checkpoint(path):
    ck = torch.load(path, map_location="cpu", weights_only=False)
    model = M.build_model(ck["arch"], head_norm=ck.get("head_norm", "group"))
    model.load_state_dict(ck["model"])
    model.eval()
    return model, ck


def export(ckpt, out, name="hemocount-compact", fixture_images=(), opset=17):
    model, ck = load_checkpoint(ckpt)
    wrapper = M.ExportWrapper(model).eval()
    dummy = torch.rand(1, 3, 256, 384)
    tmp = out + ".tmp"
    torch.onnx.export(wrapper, (dummy,), tmp, input_names=["image"], output_names=["scores", "deltas"],
                      dynamic_axes={"image": {2: "height", 3: "width"}, "scores": {1: "anchors_x_classes"},
                                    "deltas": {1: "anchors_x_4"}},
                      opset_version=opset, do_constant_folding=True, **legacy_exporter())
    import onnx
    m = onnx.load(tmp)
    meta = metadata(model, ck, name)
    del m.metadata_props[:]
    p = m.metadata_props.add()
    p.key, p.value = "hemocount", json.dumps(meta)
    onnx.save(m, tmp)
    os.replace(tmp, out)
    if fixture_images:
        write_fixture(model, fixture_images, os.path.splitext(out)[0] + ".parity.json", out, "white_balance" in meta["input"])
    return meta


@torch.no_grad()
def write_fixture(model, images, path, onnx_path, white_balance=False):
    """torchvision's RetinaNet.postprocess_detections on whole images at native size."""
    entries = []
    for img_path in images:
        img = load_rgb(img_path, white_balance).float() / 255.0
        det = model([img])[0]
        entries.append({"image": os.path.basename(img_path), "width": img.shape[2], "height": img.shape[1],
                        "boxes": [[round(v, 4) for v in b] for b in det["boxes"].tolist()],
                        "scores": [round(v, 6) for v in det["scores"].tolist()],
                        "labels": [CLASSES[i] for i in det["labels"].tolist()]})
    doc = {"model_sha256": hashlib.sha256(open(onnx_path, "rb").read()).hexdigest(),
           "score_floor": model.score_thresh, "nms_iou": model.nms_thresh, "images": entries}
    with open(path + ".tmp", "w") as f:
        json.dump(doc, f)
    os.replace(path + ".tmp", path)


def eager_bench(onnx_path, images, runs=5, threads=None):
    """PyTorch eager inference on the weights of a shipped ONNX model, timed the way
    `hemocount count` is: read and decode the file, normalise, network, decoding and NMS
    (torchvision's RetinaNet does the last three), per image. For the speed benchmark."""
    import time
    if threads:
        torch.set_num_threads(threads)
    model = M.build_model(onnx_arch(onnx_path))
    M.load_init(model, onnx_path)
    model.eval()
    import onnx
    meta = json.loads({p.key: p.value for p in onnx.load(onnx_path).metadata_props}["hemocount"])
    wb = "white_balance" in meta["input"]  # the same work as hemocount's count
    times, fwd = [], []
    with torch.no_grad():
        for p in images[:2]:  # warm-up
            model([load_rgb(p, wb).float() / 255.0])
        for _ in range(runs):
            for p in images:
                t0 = time.perf_counter()
                x = load_rgb(p, wb).float() / 255.0
                t1 = time.perf_counter()
                model([x])
                t2 = time.perf_counter()
                times.append((t2 - t0) * 1000)
                fwd.append((t2 - t1) * 1000)

    def q(xs, p):
        xs = sorted(xs)
        return round(xs[min(len(xs) - 1, int(p * len(xs)))], 1)
    return {"torch": torch.__version__, "threads": torch.get_num_threads(), "images": len(times),
            "per_image_ms": {"p50": q(times, 0.5), "p90": q(times, 0.9)},
            "network_and_postprocess_ms": {"p50": q(fwd, 0.5), "p90": q(fwd, 0.9)}}
