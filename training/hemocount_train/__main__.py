"""python3 -m hemocount_train {split,train,export,check} ... (run from training/)."""
from __future__ import annotations

import argparse
import json
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_DATA = os.path.normpath(os.path.join(HERE, "..", "..", "..", "shared", "datasets"))


def need_torch():
    try:
        import torch  # noqa: F401
        import torchvision  # noqa: F401
    except ImportError as e:
        sys.exit(f"hemocount train: PyTorch is not available to {sys.executable} ({e}).\n"
                 "Install it with: apt-get install python3-torch python3-torchvision python3-onnx\n"
                 "and point HEMOCOUNT_PYTHON at an interpreter that can import torch (e.g. /usr/bin/python3).")


def epoch_scorer(val_samples, out_dir):
    """Each epoch's mean best F1 on the validation images (per subset too), computed by
    `hemocount select`, so that training stops on the metric every report uses, from the
    one implementation of it (the TypeScript core)."""
    import shutil
    import subprocess
    import warnings
    from .coco import write_coco
    from .export import export
    node = os.environ.get("HEMOCOUNT_NODE") or shutil.which("node")
    cli = os.path.normpath(os.path.join(HERE, "..", "..", "bin", "hemocount.js"))
    try:  # found, and it runs (a checkout needs `npm run build`): know before the first epoch
        ok = bool(node) and subprocess.run([node, cli, "--version"], capture_output=True, timeout=60).returncode == 0
    except OSError:
        ok = False
    if not ok:
        sys.exit(f"--patience scores each epoch with hemocount's evaluation, which needs Node and a working {cli} "
                 f"(node: {node or 'not found'}; in a checkout, run `npm run build`); run it through "
                 "`hemocount train`, or leave --patience out")
    if not val_samples:
        usage("--patience needs validation images: --val, or the shared split (no --data)")
    val_json = os.path.join(out_dir, "val.json")
    write_coco(val_samples, val_json)

    def score(ckpt):
        onnx_path = os.path.splitext(ckpt)[0] + ".onnx"
        with warnings.catch_warnings():  # the exporter's notes, once per epoch, would bury the log
            warnings.simplefilter("ignore")
            export(ckpt, onnx_path)
        try:
            r = subprocess.run([node, cli, "select", "--data", val_json, "--quiet", "--json", "-", onnx_path],
                               capture_output=True, text=True)
        finally:
            os.remove(onnx_path)
        if r.returncode != 0:
            raise RuntimeError(f"scoring {ckpt} with hemocount select failed: {r.stderr.strip()}")
        m = json.loads(r.stdout)["models"][0]
        parts = {f"val_f1_{k}": round(100 * v, 2) for k, v in m["subsetMeanBestF1"].items() if v is not None}
        return {"val_f1": round(100 * m["meanBestF1"], 2), **parts}
    return score


def load_samples(args):
    from .data import Defects, mark_unlabelled, read_dataset, relabel, shared_images, shared_split
    defects = Defects()
    split, val_split = getattr(args, "split", None), getattr(args, "val_split", None)
    cmd = f"hemocount {args.cmd}"
    if args.data is None or os.path.abspath(args.data) == DEFAULT_DATA:
        if split is not None or val_split is not None:
            usage(f"{cmd}: --split and --val-split pick sets of YOLO data given with --data and --val; "
                  "the shared datasets have hemocount's own split")
        if not os.path.isdir(DEFAULT_DATA):
            sys.exit(f"no --data given and the shared datasets are not at {DEFAULT_DATA}")
        train, val = shared_split(DEFAULT_DATA, defects)
        info = {"data": "shared/datasets (complete labels where TXL-PBC has them; bccd-groups.csv units)",
                "rule": "shared_split"}
    else:
        if val_split is not None and not args.val:
            usage(f"{cmd}: --val-split picks a set of the --val data; give --val too")
        try:
            train = read_dataset(args.data, defects, split)
            val = read_dataset(args.val, defects, val_split) if args.val else []
            both = shared_images(train, val)
        except (ValueError, FileNotFoundError, OSError) as e:
            sys.exit(f"{cmd}: {e}")
        if both:
            v, t = both[0]
            eg = v if v == t else f"{v}, a copy of {t}"
            msg = (f"{len(both)} of the {len(val)} validation images are training images too (e.g. {eg}): "
                   "a model scored on images it trained on looks better than it is")
            if getattr(args, "resume", False):  # a run begun before this check: it goes on, warned
                print(f"warning: {msg}", file=sys.stderr)
            else:
                root = os.path.dirname(args.data) if args.data.endswith((".yaml", ".yml")) else args.data
                is_yolo = os.path.isdir(os.path.join(root, "labels")) or os.path.isfile(os.path.join(root, "data.yaml"))
                yolo = " (for one YOLO folder, pick its sets: --split train --val-split val)" if is_yolo and split is None else ""
                sys.exit(f"{cmd}: {msg}. Validate on other images{yolo}")
        mark_unlabelled(train, defects)
        info = {"data": args.data, "val": args.val,
                **({"split": split} if split else {}), **({"val_split": val_split} if val_split else {})}
    if getattr(args, "relabel", None):
        try:
            n = relabel(train, args.relabel, defects)
        except ValueError as e:
            sys.exit(f"--relabel: {e}")
        if n == 0:
            sys.exit(f"--relabel: no VOC file in {args.relabel} is named after a training image")
        info = {**info, "relabel": args.relabel, "relabelled": n}
    if defects.items:
        print(f"{len(defects.items)} annotation notes:\n{defects.summary(args.show_defects)}", file=sys.stderr)
    if not train:
        sys.exit(f"{args.data}: no training images found")
    return train, val, info


def usage(msg: str):
    """A usage error (options that contradict each other or the run folder): exit status 2, as
    hemocount's other commands and argparse give."""
    print(msg, file=sys.stderr)
    sys.exit(2)


RUN_FILE = re.compile(r"(epoch_\d+\.pt|last\.pt|best\.pt|train_log\.jsonl)")


def run_files(out: str) -> list[str]:
    """The files a training run writes in its --out folder; only these are removed by
    --overwrite (a user's own checkpoints or notes beside them stay)."""
    names = os.listdir(out) if os.path.isdir(out) else []
    return sorted(f for f in names if RUN_FILE.fullmatch(f))


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python3 -m hemocount_train",
                                 description="Train and export hemocount's RetinaNet blood-cell detector.")
    sub = ap.add_subparsers(dest="cmd", required=True)

    def data_args(p):
        p.add_argument("--data", help="dataset folder (VOC annotations/+images/, YOLO labels/+images/, or COCO "
                                      "json); default: ../shared/datasets with hemocount's validation split")
        p.add_argument("--val", help="validation dataset (with --data); never the training images")
        p.add_argument("--split", help="a YOLO set of --data (folder or data.yaml): only labels/SPLIT/, e.g. train")
        p.add_argument("--val-split", help="a YOLO set of --val, e.g. val")
        p.add_argument("--relabel", help="folder of VOC files that replace the labels of the training images they are "
                                         "named after, taken as complete (difficult objects: undecided cells), e.g. "
                                         "scripts/pseudo-labels.py's")
        p.add_argument("--show-defects", type=int, default=15, help="how many annotation notes to print")

    p = sub.add_parser("train", help="train a model (checkpoint every epoch)")
    data_args(p)
    p.add_argument("--out", default="runs/compact", help="run folder: checkpoints and train_log.jsonl")
    p.add_argument("--overwrite", action="store_true", help="start a new run in an --out folder that holds one")
    # run settings default to None here: TrainConfig holds the defaults, and --resume must
    # tell a setting the user gave from one left alone
    p.add_argument("--arch", choices=["compact", "compact-wide", "resnet50"],
                   help="default compact; compact-wide with --init from a compact model widens it")
    p.add_argument("--epochs", type=int, help="default 30; with --resume, a larger number trains on")
    p.add_argument("--batch-size", type=int, help="default 8")
    p.add_argument("--lr", type=float, help="default 0.002")
    p.add_argument("--crop", type=int, help="training crop size in pixels (native resolution), default 384")
    p.add_argument("--seed", type=int)
    p.add_argument("--resume", action="store_true", help="continue OUT/last.pt with the settings saved in it "
                                                         "(settings that contradict them are refused)")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto")
    p.add_argument("--workers", type=int, help="DataLoader worker processes preparing batches "
                                               "(default: 0 on CPU; on CUDA, all cores but two)")
    p.add_argument("--amp", action="store_true", help="bfloat16 mixed precision (CUDA only)")
    p.add_argument("--init", help="start from a trained model: a checkpoint .pt or an ONNX file exported by hemocount")
    p.add_argument("--scale-range", help="scale jitter range (log-uniform), default 0.6,1.6")
    p.add_argument("--patience", type=int,
                   help="score every epoch on the validation images (hemocount's mean best F1, needs Node) and "
                        "stop after this many epochs without a better one; best.pt is the best epoch")
    p.add_argument("--copy-paste", type=float, help="probability (0-1) that a training crop gets 1-3 white cells or "
                                                    "platelets pasted from other images (default 0)")
    p.add_argument("--stain-jitter", type=float,
                   help="width of the stain jitter, times the default (brightness and contrast +-25 %%, saturation "
                        "+-30 %%, hue +-0.05 turn); above 1, also grey crops with probability 0.05 x (S - 1) (default 1)")
    p.add_argument("--noise", type=float, help="sensor noise on half the training crops: Gaussian with sigma drawn up "
                                               "to this fraction of full scale, e.g. 0.06 (default 0: none)")
    p.add_argument("--colour-cast", type=float, help="the lamp's colour on half the training crops: red and blue gains "
                                                     "drawn up to x(1 + C) or down as far, green a third of that, e.g. 0.4 "
                                                     "(default 0: none)")
    p.add_argument("--white-balance", action="store_true", default=None,
                   help="make every image's background grey (here, and wherever the exported model counts: its "
                        "metadata says so), so that the lamp's colour does not matter")
    p.add_argument("--class-weight", help="classification loss weight per class, e.g. Platelets=2 (default 1 each)")
    p.add_argument("--threads", type=int, help="CPU threads for torch")
    p.add_argument("--max-steps-per-epoch", type=int)
    p.add_argument("--oversample", help="repeat images of a source, e.g. full=3")
    p.add_argument("--box-loss", choices=["l1", "giou"], help="box-regression loss (default l1)")
    p.add_argument("--head-norm", choices=["none", "group"], help="normalisation in the shared subnets (default none)")
    p.add_argument("--backbone-weights", help="local .pth with backbone (e.g. ImageNet ResNet-50) weights")
    p.add_argument("--freeze-backbone", action="store_true", default=None, help="train only FPN and heads (paper's recipe)")

    p = sub.add_parser("export", help="checkpoint -> ONNX with metadata (+ parity fixture)")
    p.add_argument("checkpoint")
    p.add_argument("--out", required=True)
    p.add_argument("--name", default="hemocount-compact")
    p.add_argument("--fixture", nargs="*", default=[], help="images for the parity fixture")

    p = sub.add_parser("fixture", help="parity fixture: torchvision's detections for images, tied to an ONNX file")
    p.add_argument("checkpoint")
    p.add_argument("--onnx", required=True, help="the ONNX file exported from this checkpoint (hashed into the fixture)")
    p.add_argument("images", nargs="+")

    p = sub.add_parser("split", help="write the validation split as COCO JSON and print its summary")
    data_args(p)
    p.add_argument("--out", required=True, help="COCO JSON for the validation images")
    p.add_argument("--train-out", help="COCO JSON for the training images")

    p = sub.add_parser("check", help="read a dataset and list its annotation defects")
    p.add_argument("data")
    p.add_argument("--split", help="a YOLO set: only labels/SPLIT/")

    p = sub.add_parser("eager-bench", help="time PyTorch eager inference of a shipped ONNX model's weights (JSON)")
    p.add_argument("--model", required=True, help="ONNX file exported by hemocount")
    p.add_argument("--runs", type=int, default=5, help="passes over the images")
    p.add_argument("--threads", type=int)
    p.add_argument("images", nargs="+")

    p = sub.add_parser("arch-candidates", help="export the architecture candidates (random weights) for bench/architectures")
    p.add_argument("--out", required=True, help="folder for the ONNX files and candidates.json")

    args = ap.parse_args(argv)
    if args.cmd == "check":
        from .data import Defects, mark_unlabelled, read_dataset
        d = Defects()
        try:
            s = read_dataset(args.data, d, args.split)
        except (ValueError, FileNotFoundError) as e:
            sys.exit(str(e))
        mark_unlabelled(s, d)
        print(json.dumps({"images": len(s), "boxes": sum(len(x.boxes) for x in s), "defects": len(d.items)}))
        if d.items:
            print(d.summary(10 ** 6))
        return
    if args.cmd == "split":
        from .coco import write_coco
        train, val, info = load_samples(args)
        write_coco(val, args.out)
        if args.train_out:
            write_coco(train, args.train_out)
        print(json.dumps({"train": len(train), "val": len(val), **info}))
        return
    need_torch()
    import torch
    if args.cmd == "train":
        from .train import TrainConfig, train
        device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
        if args.patience is not None and args.patience < 1:
            usage(f"--patience must be a whole number of epochs >= 1, not {args.patience}")
        try:
            scale = tuple(float(v) for v in args.scale_range.split(",")) if args.scale_range else None
            assert scale is None or (len(scale) == 2 and 0 < scale[0] <= scale[1])
        except (ValueError, AssertionError):
            usage(f"--scale-range must be two numbers LOW,HIGH, not '{args.scale_range}'")
        if args.noise is not None and not 0 <= args.noise <= 0.5:
            usage(f"--noise must be a fraction of full scale from 0 to 0.5, not {args.noise}")
        if args.colour_cast is not None and not 0 <= args.colour_cast <= 1:
            usage(f"--colour-cast must be from 0 to 1, not {args.colour_cast}")
        if args.class_weight:
            from .train import class_weights
            try:
                class_weights(args.class_weight)
            except ValueError as e:
                usage(f"--class-weight: {e}")
        given = {"data": args.data and os.path.abspath(args.data), "val": args.val and os.path.abspath(args.val),
                 "split": args.split, "val_split": args.val_split,
                 "relabel": args.relabel and os.path.abspath(args.relabel),
                 "oversample": args.oversample, "arch": args.arch, "head_norm": args.head_norm, "box_loss": args.box_loss, "epochs": args.epochs,
                 "batch_size": args.batch_size, "lr": args.lr, "crop": args.crop, "scale": scale, "seed": args.seed,
                 "init": args.init, "backbone_weights": args.backbone_weights, "freeze_backbone": args.freeze_backbone,
                 "max_steps_per_epoch": args.max_steps_per_epoch, "copy_paste": args.copy_paste, "stain": args.stain_jitter,
                 "class_weight": args.class_weight, "noise": args.noise, "cast": args.colour_cast,
                 "white_balance": args.white_balance, "patience": args.patience}
        if args.resume:
            ckpt = os.path.join(args.out, "last.pt")
            if not os.path.isfile(ckpt):
                held = run_files(args.out)
                if held:  # stopped between writing its first epoch and recording it
                    usage(f"--resume: {args.out} has no last.pt ({', '.join(held[:3])}): its first epoch was never "
                          "recorded, so there is nothing to continue; start the run again with --overwrite")
                usage(f"--resume: {ckpt} does not exist (no run to continue in {args.out})")
            saved = torch.load(ckpt, map_location="cpu", weights_only=False)
            cfg = TrainConfig.from_checkpoint(saved)
            bad = cfg.conflicts(given)
            if bad:
                usage(f"--resume: {args.out} was trained with other settings:\n  " + "\n  ".join(bad) +
                      "\nresume with the run's own settings (leave them out), or start a new --out")
            if args.epochs:
                cfg.epochs = args.epochs
            if args.patience is not None:
                cfg.patience = args.patience
        else:
            held = run_files(args.out)
            if held and not args.overwrite:
                usage(f"{args.out} holds a training run ({', '.join(held[:4])}{', ...' if len(held) > 4 else ''}): "
                      "--resume continues it; choose another --out, or --overwrite to start again there")
            if args.init and os.path.isfile(args.init) and any(
                    os.path.samefile(args.init, os.path.join(args.out, f)) for f in held):
                usage(f"--init {args.init} is a checkpoint of the run that --overwrite would remove: "
                      "copy it out of that folder first, or train into another --out")
            cfg = TrainConfig(**{k: v for k, v in given.items() if v is not None})
        args.data, args.val, args.relabel, args.split, args.val_split = cfg.data, cfg.val, cfg.relabel, cfg.split, cfg.val_split
        train_s, val_s, info = load_samples(args)
        if not args.resume:
            for f in held:  # a new run does not leave the old one's later epochs beside its own (once its data is read)
                os.remove(os.path.join(args.out, f))
        if cfg.oversample:
            # e.g. full=3: full-field smears are the minority next to TXL-PBC's close-ups
            for spec in cfg.oversample.split(","):
                src, k = spec.split("=")
                extra = [s for s in train_s if s.source == src]
                if not extra:
                    sys.exit(f"--oversample: no training images from source '{src}'")
                train_s = train_s + extra * (int(k) - 1)
            info = {**info, "oversample": cfg.oversample}
        if args.resume and saved.get("train_images") not in (None, len(train_s)):
            print(f"warning: the training data has changed since the run began: {len(train_s)} training images, "
                  f"{saved['train_images']} then (the run goes on with what is there now)", file=sys.stderr)
        train(cfg, train_s, val_s, args.out, resume=args.resume, device=device, threads=args.threads, split_info=info,
              workers=args.workers if args.workers is not None else
              (max(1, (os.cpu_count() or 2) - 2) if device.startswith("cuda") else 0),
              amp=args.amp, log=lambda m: print(m, file=sys.stderr, flush=True),
              epoch_score=epoch_scorer(val_s, args.out) if cfg.patience else None)
    elif args.cmd == "fixture":
        import os as _os
        from .export import load_checkpoint, write_fixture
        model, ck = load_checkpoint(args.checkpoint)
        out = _os.path.splitext(args.onnx)[0] + ".parity.json"
        write_fixture(model, args.images, out, args.onnx, bool((ck.get("config") or {}).get("white_balance")))
        print(json.dumps({"out": out, "images": len(args.images)}))
    elif args.cmd == "arch-candidates":
        from .export import arch_candidates
        print(json.dumps(arch_candidates(args.out)))
    elif args.cmd == "eager-bench":
        from .export import eager_bench
        print(json.dumps(eager_bench(args.model, args.images, args.runs, args.threads)))
    elif args.cmd == "export":
        from .export import export
        meta = export(args.checkpoint, args.out, args.name, args.fixture)
        print(json.dumps({"out": args.out, "parameters": meta["provenance"]["parameters"]}))


def readable(fn):
    """Run fn, turning an interrupt and the usual mistakes with files into one line, not a traceback."""
    import pickle
    try:
        return fn()
    except KeyboardInterrupt:
        sys.exit("interrupted: the last finished epoch's checkpoint is kept; --resume continues from it")
    except FileNotFoundError as e:
        sys.exit(f"{e.filename}: no such file")
    except (pickle.UnpicklingError, EOFError) as e:
        sys.exit(f"not a hemocount checkpoint (.pt) or ONNX model: {e}")


if __name__ == "__main__":
    readable(main)
