import json
import math
import os
import shutil
import subprocess
import sys

import pytest
import torch
from conftest import ROOT, SAMPLES
from hemocount_train.data import read_voc
from hemocount_train.model import build_model, count_parameters, widen_state
from hemocount_train.train import CropDataset, TrainConfig, train


def two_images():
    s = read_voc(os.path.join(SAMPLES, "truth"), SAMPLES)
    return [x for x in s if os.path.basename(x.image) in ("BloodImage_00004.jpg", "BloodImage_00011.jpg")]


def test_loss_goes_down_on_two_real_images():
    torch.manual_seed(0)
    model = build_model("compact")
    model.train()
    ds = CropDataset(two_images(), augment=False)
    imgs, tgts = zip(*[ds.get(i, 0) for i in range(2)])
    opt = torch.optim.AdamW(model.parameters(), lr=5e-4)
    losses = []
    for _ in range(25):
        out = model(list(imgs), list(tgts))
        loss = out["classification"] + out["bbox_regression"]
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)  # as the training loop does
        opt.step()
        losses.append(float(loss))
    # single steps are noisy on two images; the mean of the last five must be well down
    assert sum(losses[-5:]) / 5 < 0.7 * losses[0], losses


def test_eval_mode_matches_training_statistics():
    # heads are shared across pyramid levels: a BatchNorm there mixes the levels' running
    # statistics and collapses eval-mode scores; none may be present
    model = build_model("compact")
    assert not [m for m in model.head.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]


def test_widening_keeps_what_the_narrow_model_computes():
    torch.manual_seed(0)
    narrow = build_model("compact")
    with torch.no_grad():  # trained-looking BatchNorm statistics, so slices must line up
        for m in narrow.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    wide = build_model("compact-wide")
    wide.load_state_dict(widen_state(wide.state_dict(), narrow.state_dict()))
    assert count_parameters(wide) > 1.8 * count_parameters(narrow)
    x = torch.rand(1, 3, 256, 384)
    with torch.no_grad():
        a = narrow.head(list(narrow.eval().backbone(x).values()))
        b = wide.head(list(wide.eval().backbone(x).values()))
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-5), k
    with pytest.raises(ValueError, match="does not fit"):
        widen_state(narrow.state_dict(), wide.state_dict())
    # only the backbone widens: other weights must match, and none may be left over
    grouped = build_model("compact-wide", head_norm="group").state_dict()
    with pytest.raises(ValueError, match="does not have"):
        widen_state(wide.state_dict(), grouped)


def test_resume_continues_exactly(tmp_path):
    s = two_images()
    cfg = lambda epochs: TrainConfig(arch="compact", batch_size=2, crop=256, seed=3, max_steps_per_epoch=1, epochs=epochs)  # noqa: E731
    kw = dict(log=lambda m: None, threads=1)
    torch.manual_seed(0)
    straight = train(cfg(2), s, [], str(tmp_path / "a"), **kw)
    train(cfg(1), s, [], str(tmp_path / "b"), **kw)
    resumed = train(cfg(2), s, [], str(tmp_path / "b"), resume=True, **kw)
    for (k, v), (_, w) in zip(straight.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(v, w), k
    log = [json.loads(ln) for ln in open(tmp_path / "b" / "train_log.jsonl")]
    assert [r["epoch"] for r in log if r["type"] == "epoch"] == [1, 2]
    step = next(r for r in log if r["type"] == "step")
    assert {"loss_cls", "loss_box", "loss", "lr", "time", "images_per_s"} <= step.keys()
    assert os.path.isfile(tmp_path / "b" / "epoch_002.pt")


def test_resnet50_paper_configuration_builds_and_steps():
    model = build_model("resnet50")
    n = count_parameters(model)
    assert 30e6 < n < 40e6, n  # the paper reports 36.4 M for its Keras RetinaNet-50
    assert len(model.head.classification_head.conv) == 4
    model.train()
    ds = CropDataset(two_images()[:1], crop=256, augment=True)
    img, tgt = ds.get(0, 0)
    out = model([img], [tgt])
    (out["classification"] + out["bbox_regression"]).backward()


def test_export_onnx_with_metadata_that_node_reads(tmp_path):
    s = two_images()
    train(TrainConfig(epochs=1, batch_size=2, crop=256, max_steps_per_epoch=1), s, [], str(tmp_path / "run"),
          log=lambda m: None, threads=1)
    from hemocount_train.export import export
    out = str(tmp_path / "m.onnx")
    meta = export(str(tmp_path / "run" / "last.pt"), out, fixture_images=[s[0].image])
    import onnx
    m = onnx.load(out)
    onnx.checker.check_model(m)
    embedded = json.loads({p.key: p.value for p in m.metadata_props}["hemocount"])
    assert embedded["classes"][0]["name"] == "RBC" and len(embedded["anchors"]["levels"]) == 5
    fixture = json.load(open(str(tmp_path / "m.parity.json")))
    assert fixture["images"][0]["image"] == os.path.basename(s[0].image)
    # onnxruntime-node loads the file and the TypeScript side parses its metadata
    script = ("import {openOnnx} from './dist/src/adapters/onnx.js';"
              f"const m = await openOnnx({json.dumps(out)});"
              "const r = await m.run({data: new Float32Array(3*256*384), dims: [1, 3, 256, 384], height: 256, width: 384});"
              "console.log(JSON.stringify({name: m.metadata.name, scores: r.scores.length}));")
    r = subprocess.run(["node", "--input-type=module", "-e", script], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert got["name"] == meta["name"]
    anchors = sum((256 // st) * (384 // st) for st in (8, 16, 32, 64, 128)) * 9
    assert got["scores"] == anchors * 3


def test_module_cli_help():
    r = subprocess.run([os.sys.executable, "-m", "hemocount_train", "--help"], cwd=os.path.join(ROOT, "training"),
                       capture_output=True, text=True)
    assert r.returncode == 0 and "train" in r.stdout and "export" in r.stdout


def test_init_from_the_shipped_onnx_reproduces_its_detections():
    """--init from an ONNX file (BatchNorm folded into the convolutions) gives back the
    network that the shipped parity fixture was made with."""
    from hemocount_train.model import load_init
    from hemocount_train.train import load_rgb
    onnx_path = os.path.join(ROOT, "models", "hemocount-default.onnx")
    fixture = json.load(open(os.path.join(ROOT, "models", "hemocount-default.parity.json")))
    model = build_model("compact")
    assert load_init(model, onnx_path) is True
    model.eval()
    im = fixture["images"][0]
    with torch.no_grad():
        out = model([load_rgb(os.path.join(SAMPLES, im["image"])).float() / 255.0])[0]
    n = 10
    assert torch.allclose(out["scores"][:n], torch.tensor(im["scores"][:n]), atol=2e-3)
    assert torch.allclose(out["boxes"][:n], torch.tensor(im["boxes"][:n]), atol=1.0)
    with pytest.raises(ValueError, match="do not fit"):
        load_init(build_model("resnet50"), onnx_path)


def test_incomplete_class_teaches_no_background():
    """A class marked incomplete keeps its boxes as positives but adds no loss on anchors
    away from them (CBC's unboxed red cells are not taught as background)."""
    torch.manual_seed(0)
    model = build_model("compact")
    model.train()
    ds = CropDataset(two_images(), augment=False)
    img, tgt = ds.get(0, 0)
    keep = tgt["labels"] != 0  # drop the red cells, as incomplete labels would
    partial = {**tgt, "boxes": tgt["boxes"][keep], "labels": tgt["labels"][keep]}
    loss = lambda t: float(model([img], [t])["classification"])  # noqa: E731
    as_background = loss(partial)
    masked = loss({**partial, "incomplete_classes": torch.tensor([True, False, False])})
    assert masked < as_background
    # with every class incomplete only the positives' loss is left
    all_masked = loss({**partial, "incomplete_classes": torch.tensor([True, True, True])})
    assert all_masked < masked


def test_class_weight_scales_one_class_loss():
    """--class-weight Platelets=2 doubles exactly the platelet classifier's share of the loss."""
    from hemocount_train.train import class_weights
    torch.manual_seed(0)
    model = build_model("compact")
    model.train()
    img, tgt = CropDataset(two_images(), augment=False).get(0, 0)
    head = model.head.classification_head
    loss = lambda: float(model([img], [tgt])["classification"])  # noqa: E731
    plain = loss()
    head.class_weight = torch.tensor([0.0, 0.0, 1.0])
    platelets = loss()
    head.class_weight = torch.tensor(class_weights("Platelets=2"))
    assert 0 < platelets < plain
    assert abs(loss() - (plain + platelets)) < 1e-5 * plain
    assert class_weights("wbc=1.5,PLT=3") == [1.0, 1.5, 3.0]
    for bad in ("Foo=2", "Platelets=0", "Platelets=x", "Platelets"):
        with pytest.raises(ValueError, match="CLASS=WEIGHT"):
            class_weights(bad)


def test_undecided_cells_teach_neither_cell_nor_background():
    """Cells nobody confirmed (VOC difficult: a teacher's uncertain detections) add no
    "not this class" loss near them, and only for their own class; the cells' loss stays."""
    torch.manual_seed(0)
    model = build_model("compact")
    model.train()
    ds = CropDataset(two_images(), augment=False)
    img, tgt = ds.get(0, 0)
    assert tgt["ignore_boxes"].shape == (0, 4)
    rbc = tgt["labels"] == 0
    partial = {**tgt, "boxes": tgt["boxes"][~rbc], "labels": tgt["labels"][~rbc]}
    loss = lambda t: float(model([img], [t])["classification"])  # noqa: E731
    as_background = loss(partial)
    undecided = loss({**partial, "ignore_boxes": tgt["boxes"][rbc], "ignore_labels": tgt["labels"][rbc]})
    as_other_class = loss({**partial, "ignore_boxes": tgt["boxes"][rbc], "ignore_labels": tgt["labels"][rbc] + 2})
    assert undecided < as_background and as_other_class < as_background and undecided != as_other_class
    # undecided cells never mask a real cell's positive anchors: undecided everywhere leaves
    # exactly the positives' loss, as when every class is incomplete
    everywhere = {**tgt, "ignore_boxes": torch.tensor([[-1e4, -1e4, 1e4, 1e4]] * 3),  # the padding too
                  "ignore_labels": torch.tensor([0, 1, 2])}
    only_positives = {**tgt, "incomplete_classes": torch.tensor([True, True, True])}
    assert abs(loss(everywhere) - loss(only_positives)) < 1e-6 and loss(everywhere) < loss(tgt)
    # a sliver cut by a crop edge (10 px of a cell in view) overlaps no anchor at IoU 0.4;
    # the anchors centred on it are masked all the same
    empty = {**partial, "boxes": partial["boxes"][:0], "labels": partial["labels"][:0]}
    sliver = {**empty, "ignore_boxes": torch.tensor([[0.0, 100.0, 10.0, 170.0]]), "ignore_labels": torch.tensor([0])}
    assert loss(sliver) < loss(empty)


def test_giou_box_loss_scores_the_overlap():
    """--box-loss giou trains the boxes on 1 - GIoU (0 for a perfect box, at most 2) instead
    of L1 on the encoded offsets; the network and its weights are the same."""
    torch.manual_seed(0)
    l1 = build_model("compact")
    giou = build_model("compact", box_loss="giou")
    giou.load_state_dict(l1.state_dict())
    img, tgt = CropDataset(two_images(), augment=False).get(0, 0)
    losses = [float(m.train()([img], [tgt])["bbox_regression"]) for m in (l1, giou)]
    assert losses[0] != losses[1] and 0 < losses[1] <= 2
    with pytest.raises(ValueError, match="box loss"):
        build_model("compact", box_loss="l2")


def test_a_sliver_cut_by_the_crop_edge_becomes_undecided():
    """A cell cut to a sliver by the training crop is neither kept as a cell nor taught as
    background (experts box some border slivers); a mostly visible one stays a cell."""
    import random
    ds = CropDataset([], crop=64)
    img = torch.zeros(3, 64, 128)
    r = random.Random(0)
    where = random.Random(0)  # the crop's position, drawn as _scaled_crop draws it
    where.randint(0, 0)
    x0 = where.randint(0, 128 - 64)
    boxes = torch.tensor([[x0 + 54.0, 10, x0 + 104, 60], [x0 + 10.0, 10, x0 + 60, 60], [x0 - 40.0, 10, x0 + 8, 58]])
    labels = torch.tensor([0, 1, 3 + 2])  # a red cell 20 % in view, a white cell, an undecided platelet
    _, b, lab = ds._scaled_crop(img, boxes, labels, 1.0, r)
    assert lab.tolist() == [3 + 0, 1, 3 + 2]
    assert torch.allclose(b[0], torch.tensor([54.0, 10, 64, 60]))
    from hemocount_train.data import Sample
    t = __import__("hemocount_train.train", fromlist=["target"]).target(b, lab, Sample("x", 64, 64))
    assert t["labels"].tolist() == [1] and t["ignore_labels"].tolist() == [0, 2]


def test_resume_restores_the_run_and_refuses_contradicting_flags(tmp_path):
    """--resume takes the settings saved in the checkpoint; a flag that contradicts them
    (a different data set, crop, ...) is refused instead of silently changing the run."""
    data = os.path.join(SAMPLES)
    out = str(tmp_path / "run")
    env = {**os.environ, "PYTHONPATH": os.path.join(ROOT, "training")}
    base = [sys.executable, "-m", "hemocount_train", "train", "--out", out, "--threads", "1"]
    first = subprocess.run(base + ["--data", data, "--epochs", "1", "--batch-size", "2", "--crop", "256",
                                   "--max-steps-per-epoch", "1"], capture_output=True, text=True, env=env)
    assert first.returncode == 0, first.stderr
    ck = torch.load(os.path.join(out, "last.pt"), map_location="cpu", weights_only=False)
    assert ck["config"]["crop"] == 256 and ck["config"]["data"] == os.path.abspath(data)
    bad = subprocess.run(base + ["--resume", "--crop", "320", "--epochs", "2"], capture_output=True, text=True, env=env)
    assert bad.returncode == 2  # a usage error, as hemocount's other commands give
    assert "crop: the run has 256, this command asks 320" in bad.stderr
    ok = subprocess.run(base + ["--resume", "--epochs", "2"], capture_output=True, text=True, env=env)
    assert ok.returncode == 0, ok.stderr
    assert "resuming" in ok.stderr and "5 train" not in ok.stderr.split("resuming")[0]
    assert torch.load(os.path.join(out, "last.pt"), map_location="cpu", weights_only=False)["epoch"] == 2
    # a new run is not started over this one unless asked, and then leaves none of its epochs behind
    fresh = base + ["--data", data, "--epochs", "1", "--batch-size", "2", "--crop", "256", "--max-steps-per-epoch", "1"]
    refused = subprocess.run(fresh, capture_output=True, text=True, env=env)
    assert refused.returncode == 2 and "holds a training run" in refused.stderr and "--resume continues it" in refused.stderr
    assert os.path.isfile(os.path.join(out, "epoch_002.pt"))
    # --overwrite removes the run's own files only, and never the checkpoint it starts from
    shutil.copy(os.path.join(out, "epoch_002.pt"), os.path.join(out, "my_best_model.pt"))
    from_own = subprocess.run(fresh + ["--overwrite", "--init", os.path.join(out, "epoch_002.pt")],
                              capture_output=True, text=True, env=env)
    assert from_own.returncode == 2 and "is a checkpoint of the run that --overwrite would remove" in from_own.stderr
    assert os.path.isfile(os.path.join(out, "epoch_002.pt"))
    again = subprocess.run(fresh + ["--overwrite"], capture_output=True, text=True, env=env)
    assert again.returncode == 0, again.stderr
    assert sorted(f for f in os.listdir(out) if f.endswith(".pt")) == ["epoch_001.pt", "last.pt", "my_best_model.pt"]
    # a file that is no checkpoint is named in one line, not a traceback
    junk = str(tmp_path / "notes.pt")
    open(junk, "w").write("my notes")
    bad_init = subprocess.run(fresh[:4] + ["--out", str(tmp_path / "other"), "--init", junk] + fresh[6:],
                              capture_output=True, text=True, env=env)
    assert bad_init.returncode != 0 and "not a hemocount checkpoint" in bad_init.stderr
    assert "Traceback" not in bad_init.stderr


def test_scaled_crop_samples_what_scaling_the_whole_image_would():
    # the crop is taken straight from the source pixels (roi_align); it must equal
    # scaling the whole image first and cropping after, for shrinking and enlarging
    import random

    from hemocount_train.train import load_rgb
    s = two_images()[0]
    img = load_rgb(s.image).float() / 255.0
    ds = CropDataset([s], crop=256)
    boxes = torch.tensor(s.boxes, dtype=torch.float32)
    checked = 0
    for f in (0.55, 0.8, 1.7):
        out, b, _ = ds._scaled_crop(img, boxes, torch.tensor(s.labels), f, random.Random(3))
        r = random.Random(3)  # the crop position drawn as _scaled_crop draws it
        nh, nw = round(img.shape[1] * f), round(img.shape[2] * f)
        y0, x0 = r.randint(0, nh - 256), r.randint(0, nw - 256)
        ref = torch.nn.functional.interpolate(img[None], (nh, nw), mode="bilinear", align_corners=False)[0]
        assert out.shape == (3, 256, 256)
        assert (out - ref[:, y0:y0 + 256, x0:x0 + 256]).abs().max() < 1e-3, f
        assert len(b) > 0 and float(b.min()) >= 0 and float(b.max()) <= 256
        # the boxes lying wholly inside the crop come out scaled and shifted, unclipped
        scaled = boxes * torch.tensor([nw / img.shape[2], nh / img.shape[1]] * 2) - torch.tensor([x0, y0, x0, y0])
        inside = scaled[(scaled[:, :2] >= 0).all(1) & (scaled[:, 2:] <= 256).all(1)]
        checked += len(inside)
        assert all(any(torch.allclose(row, got, atol=1e-3) for got in b) for row in inside)
    assert checked > 0


def test_hue_rotation_keeps_greys_and_shifts_colours():
    from hemocount_train.train import hue_rotate
    grey = torch.full((3, 4, 4), 0.4)
    assert torch.allclose(hue_rotate(grey, 0.05), grey, atol=1e-6)
    red = torch.zeros(3, 2, 2)
    red[0] = 1
    shifted = hue_rotate(red, 1 / 3)  # a third of a turn takes red to green
    assert shifted[1].min() > 0.99 and shifted[0].abs().max() < 1e-5


def test_mixed_precision_keeps_the_weights_names_and_float_outputs():
    # bfloat16 in the networks only: the anchors and losses stay float32 (tested with the
    # CPU's autocast, which CUDA's mirrors), and checkpoints keep their keys
    from hemocount_train.train import autocast_networks
    torch.manual_seed(0)
    model = build_model("compact")
    keys = list(model.state_dict())
    autocast_networks(model, "cpu")
    assert list(model.state_dict()) == keys
    seen = []
    model.backbone.body.stem[0][0].register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    model.head.classification_head.cls_logits.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    feats = model.backbone(torch.rand(1, 3, 128, 128))
    assert all(v.dtype == torch.float32 for v in feats.values())
    model.train()
    ds = CropDataset(two_images(), augment=False)
    img, tgt = ds.get(0, 0)
    losses = model([img], [tgt])
    assert all(torch.isfinite(v) and v.dtype == torch.float32 for v in losses.values())
    # inside, the convolutions did run in bfloat16 (backbone and head)
    assert seen and set(seen) == {torch.bfloat16}, seen


def test_train_refuses_validation_images_it_trains_on(tmp_path):
    from test_data import yolo_sets
    data = tmp_path / "yolo"
    data.mkdir()
    yolo_sets(data, {"train": ["BloodImage_00004", "BloodImage_00011"], "val": ["BloodImage_00017"]})
    env = {**os.environ, "PYTHONPATH": os.path.join(ROOT, "training")}
    run = lambda *a: subprocess.run([sys.executable, "-m", "hemocount_train", "train", "--out", str(tmp_path / "run"),  # noqa: E731
                                     "--epochs", "1", "--max-steps-per-epoch", "1", "--batch-size", "1", "--crop", "128",
                                     "--threads", "1", *a], capture_output=True, text=True, env=env)
    r = run("--data", str(data), "--val", str(data))
    assert r.returncode != 0
    assert "3 of the 3 validation images are training images too" in r.stderr and "--split train --val-split val" in r.stderr
    assert not (tmp_path / "run").exists() or not os.listdir(tmp_path / "run")
    r = run("--data", str(data / "data.yaml"), "--split", "train", "--val", str(data), "--val-split", "val")
    assert r.returncode == 0, r.stderr
    ck = torch.load(tmp_path / "run" / "last.pt", map_location="cpu", weights_only=False)
    assert ck["train_images"] == 2 and (ck["config"]["split"], ck["config"]["val_split"]) == ("train", "val")
    epoch = next(json.loads(x) for x in open(tmp_path / "run" / "train_log.jsonl") if '"type": "epoch"' in x)
    assert "val_loss" in epoch
    # refused before the run in --out is replaced: --overwrite removes it only once the data is read
    r = run("--data", str(data), "--val", str(data), "--overwrite")
    assert r.returncode != 0 and "training images too" in r.stderr
    assert (tmp_path / "run" / "last.pt").exists()
    # a run's validation set that gains a training image (or a run begun before this check) resumes, warned
    shutil.copy(data / "images" / "train" / "BloodImage_00004.jpg", data / "images" / "val" / "dup.jpg")
    shutil.copy(data / "labels" / "train" / "BloodImage_00004.txt", data / "labels" / "val" / "dup.txt")
    r = run("--resume", "--epochs", "2")
    assert r.returncode == 0, r.stderr
    assert "warning: 1 of the 2 validation images are training images too" in r.stderr
    # more training images than the run began with: it goes on, and says so
    shutil.copy(data / "images" / "val" / "BloodImage_00017.jpg", data / "images" / "train" / "more.jpg")
    shutil.copy(data / "labels" / "val" / "BloodImage_00017.txt", data / "labels" / "train" / "more.txt")
    r = run("--resume", "--epochs", "3")
    assert r.returncode == 0, r.stderr
    assert "warning: the training data has changed since the run began: 3 training images, 2 then" in r.stderr


def test_patience_scores_each_epoch_with_hemocounts_evaluation_and_stops(tmp_path):
    # lr 0 from the shipped model (its BatchNorm is folded, so frozen): every epoch is the
    # same model, so epoch 1 stays best and patience 1 stops after epoch 2 of 4. The F1
    # logged must be exactly what `hemocount select` reports for the model best.pt exports
    # (the shipped network, with the --scale auto band of its training images' cell size).
    import shutil
    node = os.environ.get("HEMOCOUNT_NODE") or shutil.which("node")
    if not node or not os.path.isfile(os.path.join(ROOT, "dist", "src", "cli", "main.js")):
        pytest.skip("needs Node and the built CLI (npm run build)")
    out = str(tmp_path / "run")
    model = os.path.join(ROOT, "models", "hemocount-default.onnx")
    # the samples split in two (validation images are never training images)
    sets = {"train": ["BloodImage_00004", "069e00b1-4852-5629-b1a7-b115562d6bd7"],
            "val": ["BloodImage_00011", "BloodImage_00017", "0aa766fb-87f4-5dba-86e7-299250bc2e25"]}
    for name, stems in sets.items():
        os.makedirs(tmp_path / name / "truth")
        for stem in stems:
            shutil.copy(os.path.join(SAMPLES, f"{stem}.jpg"), tmp_path / name)
            shutil.copy(os.path.join(SAMPLES, "truth", f"{stem}.xml"), tmp_path / name / "truth")
    env = {**os.environ, "PYTHONPATH": os.path.join(ROOT, "training"), "HEMOCOUNT_NODE": node}
    base = [sys.executable, "-m", "hemocount_train", "train", "--out", out, "--threads", "1", "--patience", "1"]
    r = subprocess.run(base + ["--data", str(tmp_path / "train"), "--val", str(tmp_path / "val"), "--init", model,
                               "--lr", "0", "--epochs", "4",
                               "--batch-size", "2", "--crop", "256", "--max-steps-per-epoch", "1"],
                       capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    epochs = [json.loads(x) for x in open(os.path.join(out, "train_log.jsonl")) if '"type": "epoch"' in x]
    assert [e["epoch"] for e in epochs] == [1, 2]
    assert epochs[0]["val_f1"] == epochs[1]["val_f1"] > 50
    assert "no better validation F1 for 1 epochs: stopping after epoch 2 (best: epoch 1" in r.stderr
    assert torch.load(os.path.join(out, "best.pt"), map_location="cpu", weights_only=False)["epoch"] == 1
    assert not [f for f in os.listdir(out) if f.endswith(".onnx")]
    exported = str(tmp_path / "best.onnx")
    ex = subprocess.run([sys.executable, "-m", "hemocount_train", "export", os.path.join(out, "best.pt"), "--out", exported],
                        capture_output=True, text=True, env=env)
    assert ex.returncode == 0, ex.stderr
    sel = subprocess.run([node, os.path.join(ROOT, "bin", "hemocount.js"), "select", "--quiet", "--json", "-",
                          "--data", os.path.join(out, "val.json"), exported], capture_output=True, text=True)
    assert sel.returncode == 0, sel.stderr
    assert abs(100 * json.loads(sel.stdout)["models"][0]["meanBestF1"] - epochs[0]["val_f1"]) < 0.01
    os.remove(os.path.join(out, "best.pt"))  # as a kill before it was written would leave it
    again = subprocess.run(base + ["--resume"], capture_output=True, text=True, env=env)
    assert again.returncode == 0 and "training stopped early at epoch 2" in again.stderr, again.stderr
    assert torch.load(os.path.join(out, "best.pt"), map_location="cpu", weights_only=False)["epoch"] == 1


def test_stain_jitter_widens_the_colour_changes_and_shows_grey_crops():
    # the default width reproduces the crops of runs made before the option existed
    one = two_images()[:1]
    default, same = CropDataset(one, crop=256, augment=True), CropDataset(one, crop=256, augment=True, stain=1.0)
    for e in range(3):
        assert torch.equal(default.get(0, e)[0], same.get(0, e)[0])
    # wider: some crops grey (all three channels equal), none at the default width
    wide = CropDataset(one, crop=256, augment=True, stain=5.0)  # grey with probability 0.2
    grey = lambda img: torch.equal(img[0], img[1]) and torch.equal(img[1], img[2])  # noqa: E731
    assert sum(grey(wide.get(0, e)[0]) for e in range(30)) >= 2
    assert not any(grey(default.get(0, e)[0]) for e in range(30))


def test_sensor_noise_on_about_half_the_crops_and_only_when_asked():
    one = two_images()[:1]
    plain, zero = CropDataset(one, crop=256), CropDataset(one, crop=256, noise=0.0)
    noisy = CropDataset(one, crop=256, noise=0.08)
    # without noise the crops are those of runs made before the option existed
    assert all(torch.equal(plain.get(0, e)[0], zero.get(0, e)[0]) for e in range(3))
    # with it, a crop is reproducible, and about half differ from the plain ones by pixel noise:
    # high-frequency change (neighbouring pixels disagree) that the plain crop does not have
    assert torch.equal(noisy.get(0, 4)[0], noisy.get(0, 4)[0])
    rough = lambda img: float((img[:, :, 1:] - img[:, :, :-1]).abs().mean())  # noqa: E731
    changed = [rough(noisy.get(0, e)[0]) > 1.3 * rough(plain.get(0, e)[0]) for e in range(30)]
    assert 6 <= sum(changed) <= 24, sum(changed)


def test_colour_cast_tints_about_half_the_crops_by_channel_gains_and_only_when_asked():
    one = two_images()[:1]
    plain, zero = CropDataset(one, crop=256), CropDataset(one, crop=256, cast=0.0)
    tinted = CropDataset(one, crop=256, cast=0.4)
    assert all(torch.equal(plain.get(0, e)[0], zero.get(0, e)[0]) for e in range(3))
    assert torch.equal(tinted.get(0, 4)[0], tinted.get(0, 4)[0])
    casts = 0
    for e in range(30):
        a, b = plain.get(0, e)[0], tinted.get(0, e)[0]
        ok = (a > 0.05) & (a < 0.6) & (b < 0.99)  # pixels that neither gain nor clamp distort
        gains = [float((b[c][ok[c]] / a[c][ok[c]]).median()) for c in range(3)]
        if max(abs(g - 1) for g in gains) > 1e-4:
            casts += 1
            # one gain per channel: red and blue within x1.4 either way, green within a third of that
            assert all(1 / 1.4 - 1e-3 <= g <= 1.4 + 1e-3 for g in gains) and abs(math.log(gains[1])) <= math.log(1.4) / 3 + 1e-3, gains
            assert float((b[0][ok[0]] / a[0][ok[0]] - gains[0]).abs().max()) < 0.02
    assert 6 <= casts <= 24, casts


def test_white_balance_twins_the_counting_side(tmp_path):
    """Training balances an image exactly as hemocount does before counting (src/core/pipeline.ts)."""
    from hemocount_train.train import background_colour, load_rgb, white_balanced
    files = sorted(os.path.join(SAMPLES, f) for f in os.listdir(SAMPLES) if f.endswith(".jpg"))
    script = ("import {decodeRgb} from './dist/src/adapters/image.js';"
              "import {applyGains, backgroundColour, whiteBalanceGains} from './dist/src/core/pipeline.js';"
              "import {createHash} from 'node:crypto';"
              f"for (const f of {json.dumps(files)}) {{ const img = await decodeRgb(f); const bg = backgroundColour(img);"
              "console.log(JSON.stringify([bg, createHash('sha256').update(applyGains(img, whiteBalanceGains(bg)).data).digest('hex')])); }")
    r = subprocess.run([os.environ.get("HEMOCOUNT_NODE", "node"), "--input-type=module", "-e", script], cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    import hashlib
    for f, line in zip(files, r.stdout.split()):
        bg, digest = json.loads(line)
        img = load_rgb(f)
        assert background_colour(img) == bg, f
        assert hashlib.sha256(white_balanced(img).permute(1, 2, 0).contiguous().numpy().tobytes()).hexdigest() == digest, f
