"""Wall time from process start to first reaching 99.0% and 99.5% MNIST test accuracy.

    python benchmarks/time_to_accuracy.py           # 3 seeds each
    python benchmarks/time_to_accuracy.py --quick   # one seed each
    python benchmarks/time_to_accuracy.py --only cnnlab

Each run is a fresh Python process, so imports and data loading count. Test accuracy is
measured on all 10,000 test images every EVAL_EVERY of an epoch (the evaluation time
counts too). cnnlab runs its default recipe (`cnnlab train`'s defaults, on all 60,000
training images) to the end, once as shipped and once with every speed option off
(channels-last and the malloc setting), to show the speed costs no accuracy.
The baseline, written here in the style of PyTorch's official MNIST example,
feeds a DataLoader of per-sample tensors (batch 64) to its two-conv net with Adadelta
(lr 1.0, StepLR gamma 0.7); it stops at 99.0% or after MAX_BASELINE_EPOCHS.
The last line is machine-readable:
RESULT tta99_s=<median> tta995_s=<median> baseline_tta99_s=<median> ratio=<baseline/cnnlab at 99.0%>
"""

from __future__ import annotations

import time

T0 = time.time()  # as early as possible: imports count

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

EVAL_EVERY = 0.25
MAX_BASELINE_EPOCHS = 4


class Tracker:
    """Evaluates on the test set at fixed fractions of an epoch and records first crossings."""

    def __init__(self, evaluate, steps_per_epoch: int, targets=(0.99, 0.995)):
        self.evaluate, self.every = evaluate, max(1, int(steps_per_epoch * EVAL_EVERY))
        self.targets, self.hits, self.last_acc, self.evals = targets, {}, 0.0, 0
        self.log: list[tuple[int, float, float]] = []  # (step, seconds, accuracy)

    def __call__(self, global_step: int) -> bool:
        """Returns True when every target has been reached."""
        if global_step % self.every:
            return False
        self.last_acc = self.evaluate()
        self.evals += 1
        self.log.append((global_step, round(time.time() - T0, 2), round(self.last_acc, 4)))
        for t in self.targets:
            if self.last_acc >= t and t not in self.hits:
                self.hits[t] = time.time() - T0
        return len(self.hits) == len(self.targets)


def run_cnnlab(seed: int, fast: bool = True) -> dict:
    from cnnlab.config import TrainConfig
    from cnnlab.train import make_trainer

    out = os.environ.get("TTA_OUT", "/tmp/cnnlab-tta")
    recipe = json.loads(os.environ.get("TTA_RECIPE", "{}"))  # --recipe: changes to the defaults
    cfg = TrainConfig(
        **{"seed": seed, "out": out, "val_split": 0.0, "channels_last": fast, "fast_malloc": fast}
        | recipe
    )
    trainer = make_trainer(cfg, overwrite=True)  # one scratch directory for every run
    tracker = Tracker(
        lambda: trainer.evaluate(trainer.prepared.test)["acc"], trainer.steps_per_epoch
    )
    trainer.step_hook = lambda t, epoch, step: tracker((epoch - 1) * t.steps_per_epoch + step + 1)
    result = trainer.fit()
    return {
        "hits": tracker.hits,
        "final_acc": result["test_acc"],
        "evals": tracker.evals,
        "total_s": time.time() - T0,
        "log": tracker.log[:12],
    }


def run_baseline(seed: int) -> dict:
    import numpy as np
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    from PIL import Image
    from torch.utils.data import DataLoader, Dataset

    from cnnlab.data.mnist import load_mnist

    torch.manual_seed(seed)

    class MNIST(Dataset):  # per-sample decode and normalise, as the example's transforms do
        def __init__(self, split):
            data = load_mnist(split)
            self.x, self.y = data.images[:, 0].numpy(), data.labels

        def __len__(self):
            return len(self.y)

        def __getitem__(self, i):
            t = torch.from_numpy(np.asarray(Image.fromarray(self.x[i]), dtype=np.float32) / 255)[
                None
            ]
            return (t - 0.1307) / 0.3081, self.y[i]

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.conv2 = nn.Conv2d(1, 32, 3, 1), nn.Conv2d(32, 64, 3, 1)
            self.dropout1, self.dropout2 = nn.Dropout(0.25), nn.Dropout(0.5)
            self.fc1, self.fc2 = nn.Linear(9216, 128), nn.Linear(128, 10)

        def forward(self, x):
            x = F.max_pool2d(F.relu(self.conv2(F.relu(self.conv1(x)))), 2)
            x = F.relu(self.fc1(torch.flatten(self.dropout1(x), 1)))
            return F.log_softmax(self.fc2(self.dropout2(x)), dim=1)

    train_loader = DataLoader(MNIST("train"), batch_size=64, shuffle=True)
    test_loader = DataLoader(MNIST("test"), batch_size=1000)
    model = Net()
    opt = torch.optim.Adadelta(model.parameters(), lr=1.0)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.7)

    def evaluate():
        model.eval()
        correct = 0
        with torch.no_grad():
            for x, y in test_loader:
                correct += int((model(x).argmax(1) == y).sum())
        model.train()
        return correct / 10000

    tracker = Tracker(evaluate, len(train_loader), targets=(0.99,))
    step = 0
    for _ in range(MAX_BASELINE_EPOCHS):
        for x, y in train_loader:
            loss = F.nll_loss(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            step += 1
            if tracker(step):
                return {"hits": tracker.hits, "final_acc": tracker.last_acc, "evals": tracker.evals}
        sched.step()
    return {"hits": tracker.hits, "final_acc": evaluate(), "evals": tracker.evals}


WORKERS = {
    "cnnlab": run_cnnlab,
    "cnnlab-plain": lambda seed: run_cnnlab(seed, fast=False),
    "baseline": run_baseline,
}


def spawn(which: str, seed: int) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--worker", which, "--seed", str(seed)],
        capture_output=True,
        text=True,
    )
    line = next((x for x in out.stdout.splitlines() if x.startswith("WORKER ")), None)
    if out.returncode or line is None:
        raise SystemExit(f"{which} seed {seed} failed:\n{out.stderr[-3000:]}")
    return json.loads(line[7:])


def fmt(values: list[float | None]) -> str:
    done = [v for v in values if v is not None]
    if not done:
        return "not reached"
    med = statistics.median(done)
    missing = f", {len(values) - len(done)} never" if len(done) < len(values) else ""
    return f"{med:6.1f}s (range {min(done):.1f}-{max(done):.1f}{missing})"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="one seed each")
    parser.add_argument("--only", choices=list(WORKERS), action="append", help="run only these")
    parser.add_argument("--worker", choices=list(WORKERS), help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--recipe",
        help="JSON of TrainConfig changes for the cnnlab runs, e.g. '{\"warmup\": 0.02}'",
    )
    args = parser.parse_args()
    if args.recipe:
        os.environ["TTA_RECIPE"] = json.dumps(json.loads(args.recipe))
    if args.worker:
        result = WORKERS[args.worker](args.seed)
        result["hits"] = {str(k): v for k, v in result["hits"].items()}
        print("WORKER " + json.dumps(result), flush=True)
        return
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from common import headline

    seeds = [0] if args.quick else [0, 1, 2]
    names = args.only or list(WORKERS)
    print(f"{headline()}; test accuracy on 10,000 images every {EVAL_EVERY} epoch", flush=True)
    runs: dict[str, list[dict]] = {name: [] for name in names}
    for seed in seeds:  # interleaved, so drift in the machine's speed hits every contender alike
        for name in names:
            runs[name].append(spawn(name, seed))
            print(f"  {name} seed {seed}: {json.dumps(runs[name][-1])}", flush=True)
    print(f"\n{'':13} {'to 99.0%':>30} {'to 99.5%':>30}  final accuracy per seed")
    median = {}
    for name, rs in runs.items():
        t99, t995 = ([r["hits"].get(t) for r in rs] for t in ("0.99", "0.995"))
        finals = ", ".join(f"{100 * r['final_acc']:.2f}%" for r in rs)
        last = "stops at 99.0%" if name == "baseline" else fmt(t995)
        print(f"{name:13} {fmt(t99):>30} {last:>30}  {finals}")
        median[name] = [
            statistics.median(d) if (d := [v for v in t if v is not None]) else float("nan")
            for t in (t99, t995)
        ]
    if "cnnlab" in median and "baseline" in median:
        ratio = median["baseline"][0] / median["cnnlab"][0]
        print(f"\nbaseline / cnnlab at 99.0%: {ratio:.1f}x")
        print(
            f"RESULT tta99_s={median['cnnlab'][0]:.1f} tta995_s={median['cnnlab'][1]:.1f} "
            f"baseline_tta99_s={median['baseline'][0]:.1f} ratio={ratio:.1f}"
        )


if __name__ == "__main__":
    main()
