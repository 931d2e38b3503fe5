"""Test accuracy on the full MNIST test set for the classic networks and cnnlab's recipes.

    python benchmarks/accuracy.py            # every row (about 30 minutes on 2 cores)
    python benchmarks/accuracy.py --quick    # fewer epochs, a smoke test of the table
    python benchmarks/accuracy.py --only lenet5
    python benchmarks/accuracy.py --only deep --seeds 0,1,2   # median of three seeds

Prints a table of model, settings, test accuracy, target, wall time; writes the same rows
with provenance (versions, CPU, threads, git commit) to benchmarks/results/accuracy.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from cnnlab.config import TrainConfig
from cnnlab.train import train

sys.path.insert(0, str(Path(__file__).parent))
from common import headline, provenance  # noqa: E402

# The classic networks are trained the way their numbers were first measured: batch 128,
# no weight average, 20% warm-up (the defaults before the time-to-accuracy recipe).
CLASSIC = {"batch_size": 128, "ema": 0.0, "warmup": 0.2}
ADAM = {**CLASSIC, "optimizer": "adam", "lr": 2e-3, "schedule": "onecycle", "weight_decay": 0.0}
ROWS = [
    # (label, model, settings, epochs, quick epochs, target accuracy or None)
    (
        "mnist-1conv max (C++ reference 98.28%)",
        "mnist-1conv",
        {**ADAM, "augment": "none"},
        12,
        2,
        0.983,
    ),
    (
        "mnist-1conv stochastic",
        "mnist-1conv",
        {**ADAM, "augment": "none", "set": ["pool1.mode=stochastic"]},
        12,
        2,
        0.983,
    ),
    (
        "mnist-1conv mean",
        "mnist-1conv",
        {**ADAM, "augment": "none", "set": ["pool1.mode=mean"]},
        12,
        2,
        None,
    ),
    ("mnist-fakecnn (frozen Gabor)", "mnist-fakecnn", {**ADAM, "augment": "none"}, 12, 2, None),
    (
        "lenet5 adam (reference 98.5%)",
        "lenet5",
        {**ADAM, "augment": "none", "batch_size": 128},
        10,
        2,
        0.990,
    ),
    (
        "lenet5 sgd lr=0.05",
        "lenet5",
        {**CLASSIC, "optimizer": "sgd", "lr": 0.05, "schedule": "constant", "augment": "none"},
        5,
        1,
        None,
    ),
    (
        "lenet5 sgd lr=auto",
        "lenet5",
        {**CLASSIC, "optimizer": "sgd", "lr": "auto", "schedule": "constant", "augment": "none"},
        5,
        1,
        None,
    ),
    ("mnistnet default", "mnistnet", {}, None, 1, 0.995),
    (
        "mnistnet-deep best recipe",
        "mnistnet-deep",
        {"val_split": 0.0, "batch_size": 128, "warmup": 0.2},
        20,
        1,
        0.9965,
    ),
    (
        "mnistnet-wide, same recipe",
        "mnistnet-wide",
        {"val_split": 0.0, "batch_size": 128, "warmup": 0.2},
        18,
        1,
        None,
    ),
]


def _train(model: str, settings: dict, seed: int, epochs: int | None) -> tuple[float, float, int]:
    """Test accuracy, wall seconds and epochs of one training run in a throw-away directory."""
    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainConfig(model=model, seed=seed, out=tmp, **settings)
        cfg.epochs = epochs or cfg.epochs
        start = time.perf_counter()
        result = train(cfg)
        return result["test_acc"], time.perf_counter() - start, cfg.epochs


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="few epochs: checks the script, not the claims"
    )
    parser.add_argument("--only", help="run the rows whose label contains this text")
    parser.add_argument(
        "--seeds", default="0", help="comma list; each row is trained once per seed (median shown)"
    )
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    info = provenance()
    print(headline())
    results = []
    for label, model, settings, epochs, quick_epochs, target in ROWS:
        if args.only and args.only not in label:
            continue
        accs, walls = [], []
        for seed in seeds:
            acc, wall, n_epochs = _train(
                model, settings, seed, quick_epochs if args.quick else epochs
            )
            accs.append(acc)
            walls.append(wall)
            print(f"--> {label}, seed {seed}: {100 * acc:.2f}% in {wall:.0f}s", flush=True)
        row = {
            "label": label,
            "model": model,
            "epochs": n_epochs,
            "settings": settings,
            "seeds": seeds,
            "test_accs": accs,
            "test_acc": statistics.median(accs),
            "target": target,
            "wall_s": statistics.median(walls),
        }
        results.append(row)
    print()
    print(
        f"{'model / settings':<32} {'epochs':>6} {'test acc':>9} {'target':>8} {'wall':>7}  seeds"
    )
    for r in results:
        target = f">={100 * r['target']:.2f}" if r["target"] else ""
        mark = "" if not r["target"] else ("ok" if r["test_acc"] >= r["target"] else "BELOW")
        spread = " ".join(f"{100 * a:.2f}" for a in r["test_accs"]) if len(r["seeds"]) > 1 else ""
        print(
            f"{r['label']:<32} {r['epochs']:>6} {100 * r['test_acc']:>8.2f}% {target:>8} "
            f"{r['wall_s']:>6.0f}s  {spread} {mark}"
        )
    out = (
        Path(__file__).parent
        / "results"
        / ("accuracy-quick.json" if args.quick else "accuracy.json")
    )
    out.parent.mkdir(exist_ok=True)
    if args.only and out.exists():  # keep the other rows of the last full run
        kept = [
            r
            for r in json.loads(out.read_text())["rows"]
            if r["label"] not in {x["label"] for x in results}
            and r["label"] in {row[0] for row in ROWS}  # rows since renamed or removed go
        ]
        results = kept + results
    out.write_text(json.dumps({"provenance": info, "rows": results}, indent=1))
    print(f"\nwritten: {out}")


if __name__ == "__main__":
    main()
