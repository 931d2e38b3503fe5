"""Fine-tuning from MNIST against training from scratch on 200 images of another kind.

    python benchmarks/fine_tune.py             # seeds 0, 1, 2
    python benchmarks/fine_tune.py --seeds 0

The small set is printed digits (a font, light on noisy dark colours, random sizes, weights,
angles and places, a stray mark beside each; `tests/test_own_data.py digit_folder`), 20 per
class, and another 200 drawn the same way are the test set. Both runs are `cnnlab train`'s
defaults on that folder for 15 epochs with no validation split; one starts from a default
`mnistnet` trained for one epoch on MNIST (`--init`), the other from random weights.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).parent))
from common import headline  # noqa: E402

from cnnlab.checkpoint import load_checkpoint  # noqa: E402
from cnnlab.infer.evaluate import eval_data, metrics  # noqa: E402
from cnnlab.train import TrainConfig, train  # noqa: E402
from tests.test_own_data import digit_folder  # noqa: E402

RECIPE = {"epochs": 15, "batch_size": 32, "val_split": 0.0, "augment": "translate=2"}


def accuracy(run: Path, data: Path) -> float:
    ckpt = load_checkpoint(run)
    return metrics(ckpt, eval_data(ckpt, str(data))[0])["accuracy"]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", default="0,1,2")
    seeds = [int(s) for s in parser.parse_args().seeds.split(",")]
    print(headline())
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        train(TrainConfig(epochs=1, val_split=0.0, out=str(root / "mnist")))
        print(f"pretrained on MNIST in {time.perf_counter() - start:.0f}s", flush=True)
        rows = {"from MNIST (--init)": [], "from scratch": []}
        for seed in seeds:
            small = digit_folder(root / f"digits-{seed}", 20, seed=seed)
            held_out = digit_folder(root / f"test-{seed}", 20, seed=100 + seed)
            for name, label, init in (
                ("tuned", "from MNIST (--init)", str(root / "mnist")),
                ("scratch", "from scratch", None),
            ):
                out = root / f"{name}-{seed}"
                train(TrainConfig(data=str(small), init=init, seed=seed, out=str(out), **RECIPE))
                rows[label].append(accuracy(out, held_out))
    print(f"\n{'200 printed digits, 15 epochs':<32} {'test accuracy (median)':>24}  per seed")
    for label, accs in rows.items():
        each = " ".join(f"{100 * a:.1f}" for a in accs)
        print(f"{label:<32} {100 * statistics.median(accs):>23.1f}%  {each}")


if __name__ == "__main__":
    main()
