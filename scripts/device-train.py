"""Train on a lent GPU machine inside a fixed wall-clock budget and bring the weights back.

    python3 scripts/device-train.py OUT BUDGET_S [train options...]

Run from the repository root on the device (the datasets travel as the ignored folder
.data, a copy of ../shared/datasets, linked to where training looks for them). It
  1. times the data path: images/s of batch 16 with no DataLoader workers and with the
     machine's cores as workers (the augmentation is CPU-bound: without workers the GPU idles);
  2. picks the number of epochs that fits the budget at the measured rate, so the cosine
     schedule ends inside it, and trains (`python3 -m hemocount_train train --device cuda`);
  3. writes the last epochs' weights (no optimizer state) as .npz, two epochs per file, since
     checkpoints with AdamW state exceed what a device call returns; `scripts/npz-checkpoints.py`
     turns them back into checkpoints here.
With SEEDS=1,2,3 in the environment it trains one run per seed at the same time, the cores'
workers shared between them (the GPU waits on the data, so the runs share its rate), and
brings back each run's last two epochs (KEEP_EPOCHS=1: the last, for wider networks) and
one train_logs.jsonl whose records name their run: the seeds' spread, and weights to average.
Nothing in hemocount depends on it; a CPU run of the same recipe gives the same kind of model."""
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

T0 = time.time()
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "training"))
out, budget, extra = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
work = tempfile.mkdtemp(prefix="hemocount-device-train-")  # OUT gets only the results
os.makedirs(out, exist_ok=True)
shared = os.path.join(os.path.dirname(ROOT), "shared")
if not os.path.isdir(os.path.join(shared, "datasets")) and os.path.isdir(os.path.join(ROOT, ".data")):
    os.makedirs(shared, exist_ok=True)
    os.symlink(os.path.join(ROOT, ".data"), os.path.join(shared, "datasets"))

import torch  # noqa: E402

from hemocount_train.__main__ import DEFAULT_DATA  # noqa: E402
from hemocount_train.data import Defects, shared_split  # noqa: E402
from hemocount_train.train import TrainConfig, train  # noqa: E402

device = "cuda" if torch.cuda.is_available() else "cpu"
cores = os.cpu_count() or 2
workers = max(1, cores - 2)
print(f"torch {torch.__version__}, device {device} "
      f"({torch.cuda.get_device_name(0) if device == 'cuda' else 'no GPU'}), {cores} CPU cores", flush=True)
tr, va = shared_split(DEFAULT_DATA, Defects())


def arg(name, default):
    return extra[extra.index(name) + 1] if name in extra else default


batch = int(arg("--batch-size", 16))
full = sum(1 for s in tr if s.source == "full")
times = int(dict(kv.split("=") for kv in arg("--oversample", "full=1").split(",")).get("full", 1))
per_epoch = len(tr) + (times - 1) * full


def rate(w, steps, amp=False):
    """Steady images/s of training steps (the first few, which start workers, left out)."""
    d = os.path.join(work, f"probe-w{w}-{amp}")
    cfg = TrainConfig(epochs=1, batch_size=batch, max_steps_per_epoch=steps, copy_paste=0.5)
    train(cfg, tr, [], d, device=device, workers=w, amp=amp, log=lambda *_: None)
    recs = [json.loads(x) for x in open(os.path.join(d, "train_log.jsonl")) if '"step"' in x][steps // 3:]
    return batch * len(recs) / sum(r["time"] for r in recs)


steps = int(os.environ.get("PROBE_STEPS", 45))  # fewer for a try-out on a CPU
probe = {"workers_0": rate(0, max(3, steps // 5)), f"workers_{workers}": rate(workers, steps)}
if device == "cuda" and os.environ.get("PROBE_AMP", "1") != "0":
    probe[f"workers_{workers}_amp"] = rate(workers, steps, amp=True)
# bfloat16 only where it pays: this small network leaves the GPU waiting on the data anyway
amp = probe.get(f"workers_{workers}_amp", 0) > 1.1 * probe[f"workers_{workers}"]
ips = max(probe.values())
print("images/s (batch %d): %s" % (batch, json.dumps({k: round(v, 1) for k, v in probe.items()})), flush=True)
seeds = [x for x in os.environ.get("SEEDS", "").split(",") if x]
runs = max(1, len(seeds))
left = budget - (time.time() - T0) - 40  # start-up, validation and packing
epochs = int(arg("--epochs", 0)) or max(1, int(0.65 * left / (per_epoch * runs / ips + 2.0)))
print(f"{per_epoch} images per epoch: {epochs} epochs x {runs} run(s) in {left:.0f} s", flush=True)


def command(run, w, seed=None):
    cmd = [sys.executable, "-m", "hemocount_train", "train", "--device", device, "--workers", str(w),
           "--epochs", str(epochs), "--out", run, *(["--amp"] if amp else []), *extra]
    if "--batch-size" not in extra:
        cmd += ["--batch-size", str(batch)]
    return cmd + (["--seed", seed] if seed else [])


names = [f"seed{x}" for x in seeds] or ["run"]
cmds = [command(os.path.join(work, n), max(1, workers // runs), s) for n, s in zip(names, seeds or [None])]
for c in cmds:
    print(" ".join(c), flush=True)
procs = [subprocess.Popen(c, cwd=os.path.join(ROOT, "training")) for c in cmds]
deadline = T0 + budget - 15
rc = []
for p in procs:
    try:
        rc.append(p.wait(timeout=max(60, deadline - time.time())))
    except subprocess.TimeoutExpired:
        p.kill()
        rc.append("killed at the budget")
for name in names:
    run = os.path.join(work, name)
    done = sorted(f for f in (os.listdir(run) if os.path.isdir(run) else []) if f.startswith("epoch_") and f.endswith(".pt"))
    print(f"{name}: train exited {rc[names.index(name)]}; {len(done)} epochs saved", flush=True)
    # what a device call returns is at most 8 files of 16 MiB: a wider network's two epochs fill one
    keep = done[-8:] if runs == 1 else done[-int(os.environ.get("KEEP_EPOCHS", 2)):]
    for k in range(0, len(keep), 2):
        arrays = {}
        for f in keep[k:k + 2]:
            ck = torch.load(os.path.join(run, f), map_location="cpu", weights_only=False)
            e = ck["epoch"]
            arrays.update({f"e{e:03d}/{n}": t.cpu().numpy() for n, t in ck["model"].items()})
            meta = {kk: v for kk, v in ck.items() if kk not in ("model", "optimizer")}
            arrays[f"e{e:03d}/__meta__"] = np.array(json.dumps(meta, default=list))
        tag = f"{k // 2 + 1}" if runs == 1 else name
        np.savez(os.path.join(out, f"weights-{tag}.npz"), **arrays)
    if os.path.exists(os.path.join(run, "train_log.jsonl")):
        if runs == 1:
            os.replace(os.path.join(run, "train_log.jsonl"), os.path.join(out, "train_log.jsonl"))
        else:  # one file for all runs, each record naming its run (the call returns few files)
            with open(os.path.join(out, "train_logs.jsonl"), "a") as f:
                for line in open(os.path.join(run, "train_log.jsonl")):
                    f.write(json.dumps({"run": name, **json.loads(line)}) + "\n")
gpu = torch.cuda.get_device_name(0) if device == "cuda" else "cpu"
json.dump({"images_per_s": probe, "batch": batch, "epochs": epochs, "amp": amp, "commands": cmds,
           "device": gpu, "cores": cores, "torch": torch.__version__}, open(os.path.join(out, "probe.json"), "w"))
print(f"done in {time.time() - T0:.0f} s", flush=True)
