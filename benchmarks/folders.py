"""Image folders at real sizes: load time (first and cached run) and training images/s,
cnnlab against a plain torch DataLoader + Pillow pipeline, in the same run.

    python benchmarks/folders.py                  # both sets, every row (about 15 minutes)
    python benchmarks/folders.py --sets png32     # one set
    python benchmarks/folders.py --steps 50       # fewer training steps per row

The sets are generated once, seeded, under $CNNLAB_CACHE_DIR/bench-folders (or --root):
  png32    50,000 PNGs of 32x32 colour pictures in 10 classes (CIFAR's size and count)
  jpeg256   5,000 JPEGs of 256x256 in 10 classes, read at 128x128 (decoded at reduced scale)
Each load runs in a fresh process with a folder cache of its own: "first run" decodes every
file (and writes the cache), "cached run" is the next process reading the same folder.
The baseline is an ImageFolder-style Dataset (per-sample Pillow decode, RGB, resize, to
tensor) under a DataLoader with as many workers as cnnlab uses (os.cpu_count()); its load
time is one pass over every file. Training: resnet20 on png32 (3x32x32) and resnet18 on
jpeg256 at 3x128x128, SGD with Nesterov momentum, no augmentation; images/s over the steps
after a warm-up of 5, cnnlab through `make_trainer` (what `cnnlab train` runs), the
baseline's batches from its DataLoader (shuffled, workers decoding while the model trains).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from multiprocessing import Pool
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
ROOT = Path(__file__).resolve().parents[1]

SETS = {
    "png32": {
        "count": 50_000,
        "size": 32,
        "suffix": ".png",
        "read": 32,
        "model": "resnet20",
        "batch": 128,
    },
    "jpeg256": {
        "count": 5_000,
        "size": 256,
        "suffix": ".jpg",
        "read": 128,
        "model": "resnet18",
        "batch": 32,
    },
}
CLASSES = 10
WARMUP = 5


# ---------------------------------------------------------------- generating the sets
def _picture(seed: int, label: int, size: int) -> np.ndarray:
    """A smooth random picture with a class-dependent tint, plus a little noise: it compresses
    like a photograph, not like noise."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (4, 4, 3)).astype(np.float32)
    coarse[..., label % 3] = coarse[..., label % 3] * 0.5 + 128
    from PIL import Image

    smooth = np.asarray(
        Image.fromarray(coarse.astype(np.uint8)).resize((size, size), Image.Resampling.BICUBIC),
        np.float32,
    )
    noisy = smooth + rng.normal(0, 6, smooth.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def _write(task: tuple[str, int, int, int, str]) -> None:
    from PIL import Image

    root, index, label, size, suffix = task
    path = Path(root) / f"class{label}" / f"{index:05d}{suffix}"
    Image.fromarray(_picture(index, label, size)).save(path, quality=90)


def ensure_set(root: Path, name: str) -> Path:
    """The set `name` under root, generated (seeded, in parallel) unless already complete."""
    spec, folder = SETS[name], root / name
    marker = folder / ".complete"
    if marker.is_file():
        return folder
    for label in range(CLASSES):
        (folder / f"class{label}").mkdir(parents=True, exist_ok=True)
    tasks = [
        (str(folder), i, i % CLASSES, spec["size"], spec["suffix"]) for i in range(spec["count"])
    ]
    start = time.perf_counter()
    with Pool(os.cpu_count()) as pool:
        for _ in pool.imap_unordered(_write, tasks, chunksize=256):
            pass
    marker.write_text(json.dumps({"count": spec["count"]}))
    print(
        f"generated {name}: {spec['count']} files in {time.perf_counter() - start:.0f} s",
        file=sys.stderr,
    )
    return folder


# ---------------------------------------------------------------- measured in a fresh process
def _child(args: list[str], cache: str) -> dict:
    env = {**os.environ, "CNNLAB_CACHE_DIR": cache, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, __file__, "--child", *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if out.returncode:
        raise SystemExit(f"{' '.join(args)} failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"{args[0]} {Path(args[1]).name}: {result}", file=sys.stderr, flush=True)
    return result


def child_load(folder: str, read: int | None) -> dict:
    """Time cnnlab's load of the folder, from the call to the tensor in hand."""
    from cnnlab.data.folders import load_folder

    start = time.perf_counter()
    data = load_folder(folder, size=(read, read) if read else None, progress=False)
    return {"seconds": time.perf_counter() - start, "count": len(data), "shape": list(data.shape)}


class FolderDataset:
    """What torchvision's ImageFolder does, with Pillow and nothing else: one file per item."""

    def __init__(self, root: str, read: int | None):
        dirs = sorted(d for d in Path(root).iterdir() if d.is_dir())
        self.items = sorted((str(p), label) for label, d in enumerate(dirs) for p in d.iterdir())
        self.read = read

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        import torch
        from PIL import Image

        path, label = self.items[i]
        with open(path, "rb") as f:
            img = Image.open(f).convert("RGB")
        if self.read and img.size != (self.read, self.read):
            img = img.resize((self.read, self.read), Image.Resampling.BILINEAR)
        return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1), label


def _loader(folder: str, read: int | None, batch: int, shuffle: bool):
    import torch
    from torch.utils.data import DataLoader

    return DataLoader(
        FolderDataset(folder, read),
        batch_size=batch,
        shuffle=shuffle,
        num_workers=os.cpu_count() or 1,
        drop_last=shuffle,
        generator=torch.Generator().manual_seed(0),
    )


def child_baseline_load(folder: str, read: int | None) -> dict:
    """One pass of the baseline DataLoader over every file."""
    start = time.perf_counter()
    count = sum(len(x) for x, _ in _loader(folder, read, 256, shuffle=False))
    return {"seconds": time.perf_counter() - start, "count": count}


def child_train(folder: str, read: int | None, model: str, batch: int, steps: int) -> dict:
    """images/s of cnnlab's own training loop on the folder (already in the cache)."""
    from cnnlab.train import TrainConfig
    from cnnlab.train.setup import make_trainer

    size = f"{read}x{read}" if read else None
    with tempfile.TemporaryDirectory() as out:
        cfg = TrainConfig(
            model=model,
            data=folder,
            size=size,
            batch_size=batch,
            epochs=1,
            val_split=0.0,
            augment="none",
            optimizer="nesterov",
            lr=0.01,
            ema=0.0,
            out=str(Path(out) / "run"),
        )
        trainer = make_trainer(cfg)
        marks: list[float] = []

        class Done(Exception):
            pass

        def hook(_trainer, _epoch, step):
            marks.append(time.perf_counter())
            if step + 1 >= WARMUP + steps:
                raise Done

        trainer.step_hook = hook
        try:
            trainer.train_epoch(1)
        except Done:
            pass
        finally:
            trainer.run.release()
    return {"images_per_s": steps * batch / (marks[-1] - marks[WARMUP - 1])}


def child_baseline_train(folder: str, read: int | None, model: str, batch: int, steps: int):
    """images/s of a plain loop fed by the baseline DataLoader, same model and optimizer."""
    import torch
    import torch.nn.functional as F

    from cnnlab.model.reading import load_spec
    from cnnlab.model.spec import build, retarget
    from cnnlab.train.optim import make_optimizer

    torch.manual_seed(0)
    spec, _ = load_spec(model)
    net = build(retarget(spec, (3, read, read), CLASSES)).train()
    opt = make_optimizer("nesterov", net.parameters(), 0.01, 5e-4)
    mean = torch.tensor([0.5, 0.5, 0.5]).view(1, 3, 1, 1)
    marks = []
    for step, (x, y) in enumerate(_loader(folder, read, batch, shuffle=True)):
        x = (x.float() / 255 - mean) / 0.25
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        marks.append(time.perf_counter())
        if step + 1 >= WARMUP + steps:
            break
    return {"images_per_s": steps * batch / (marks[-1] - marks[WARMUP - 1])}


CHILDREN = {
    "load": child_load,
    "baseline-load": child_baseline_load,
    "train": child_train,
    "baseline-train": child_baseline_train,
}


def _run_child(argv: list[str]) -> None:
    kind, folder, read, *rest = argv
    args = [folder, int(read) or None, *rest[:1], *map(int, rest[1:])]
    print(json.dumps(CHILDREN[kind](*args)))


# ---------------------------------------------------------------- the table
def measure(root: Path, name: str, steps: int) -> dict:
    spec = SETS[name]
    folder = str(ensure_set(root, name))
    read = str(spec["read"] or 0)
    with tempfile.TemporaryDirectory() as cache:
        first = _child(["load", folder, read], cache)
        cached = _child(["load", folder, read], cache)
        base = _child(["baseline-load", folder, read], cache)
        model, batch = spec["model"], str(spec["batch"])
        ours = _child(["train", folder, read, model, batch, str(steps)], cache)
        theirs = _child(["baseline-train", folder, read, model, batch, str(steps)], cache)
    return {
        "set": name,
        "count": first["count"],
        "shape": first["shape"],
        "first_s": first["seconds"],
        "cached_s": cached["seconds"],
        "baseline_s": base["seconds"],
        "model": spec["model"],
        "batch": spec["batch"],
        "train": ours["images_per_s"],
        "baseline_train": theirs["images_per_s"],
    }


def table(rows: list[dict]) -> str:
    from common import headline

    lines = [
        f"# {headline()}, {os.cpu_count()} workers",
        "| set | images | first run | cached run | baseline pass | first-run speed-up "
        "| model (batch) | cnnlab img/s | baseline img/s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |",
    ]
    for r in rows:
        shape = "x".join(map(str, r["shape"]))
        lines.append(
            f"| {r['set']} at {shape} | {r['count']:,} | {r['first_s']:.2f} s | "
            f"{r['cached_s']:.2f} s | {r['baseline_s']:.2f} s | "
            f"{r['baseline_s'] / r['first_s']:.1f}x | {r['model']} ({r['batch']}) | "
            f"{r['train']:.0f} | {r['baseline_train']:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _run_child(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", default=",".join(SETS), help="Comma list of: png32, jpeg256.")
    parser.add_argument("--steps", type=int, default=100, help="Timed training steps per row.")
    parser.add_argument("--root", type=Path, help="Where the sets are generated.")
    args = parser.parse_args()
    from cnnlab.data.mnist import cache_dir

    root = args.root or cache_dir() / "bench-folders"
    rows = [measure(root, name, args.steps) for name in args.sets.split(",")]
    print(table(rows))


if __name__ == "__main__":
    main()
