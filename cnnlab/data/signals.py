"""Noisy 1-D waveforms of five classes: a task for a 1-D CNN that a linear model cannot learn.

Each signal (1 channel, `length` samples) holds one short burst whose shape is its class:

  sine-slow      3 cycles of a sine under a Hann window
  sine-fast      8 cycles
  chirp          a sine whose frequency rises from 2 to 12 cycles over the burst
  square         2 cycles of a square wave under the window
  double-pulse   two Gaussian bumps

The burst is placed anywhere, stretched by 0.8-1.25 in time, scaled by 1-1.5 and flipped
in sign at random, and it shares the signal with distractors: a single Gaussian bump
elsewhere, a slow drift (half to two cycles over the whole signal) and white noise. Since
a burst's position and sign are uniformly random, every class has the same mean signal
(zero), so a linear function of the raw samples is left to guess; a convolution that
matches local shapes anywhere, followed by a global max, separates them.

    cnnlab data make-signals signals.npz
    cnnlab train --model signal-cnn --data signals.npz
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from cnnlab.atomic import atomic_path
from cnnlab.data.lazy import check_budget

CLASSES = ["sine-slow", "sine-fast", "chirp", "square", "double-pulse"]
BURST = 40  # samples in a burst before stretching


def _burst(label: int, width: int, rng: np.random.Generator) -> np.ndarray:
    t = np.linspace(0.0, 1.0, width)
    phase = rng.uniform(0, 2 * np.pi)
    window = np.hanning(width)
    if label == 0:
        return window * np.sin(2 * np.pi * 3 * t + phase)
    if label == 1:
        return window * np.sin(2 * np.pi * 8 * t + phase)
    if label == 2:
        return window * np.sin(2 * np.pi * (2 * t + 5 * t**2) + phase)
    if label == 3:
        return window * np.sign(np.sin(2 * np.pi * 2 * t + phase))
    return np.exp(-(((t - 0.3) / 0.07) ** 2)) + np.exp(-(((t - 0.7) / 0.07) ** 2))


def _bump(length: int, rng: np.random.Generator) -> np.ndarray:
    centre, width = rng.uniform(0, length), rng.uniform(3, 8)
    return rng.uniform(-1.5, 1.5) * np.exp(-(((np.arange(length) - centre) / width) ** 2))


def make_signals(
    n: int, length: int = 256, noise: float = 0.5, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(float32 signals (n, 1, length), int64 labels (n,)), classes in turn, seeded."""
    need = n * length * (8 + 4)  # float64 while drawn, float32 as returned
    check_budget(need, f"{n} signals of {length} samples need {need} bytes")
    rng = np.random.default_rng(seed)
    x = np.zeros((n, 1, length), np.float64)
    y = np.arange(n, dtype=np.int64) % len(CLASSES)
    t = np.arange(length) / length
    for i, label in enumerate(y):
        width = min(length, int(round(BURST * rng.uniform(0.8, 1.25))))
        start = int(rng.integers(0, length - width + 1))
        scale = rng.uniform(1.0, 1.5) * rng.choice([-1.0, 1.0])
        x[i, 0, start : start + width] += scale * _burst(int(label), width, rng)
        x[i, 0] += _bump(length, rng)
        x[i, 0] += rng.uniform(0, 1) * np.sin(
            2 * np.pi * rng.uniform(0.5, 2) * t + rng.uniform(0, 6.3)
        )
        x[i, 0] += rng.normal(0, noise, length)
    return x.astype(np.float32), y


def save_signals(
    out: str | os.PathLike,
    n_train: int = 3000,
    n_test: int = 1000,
    length: int = 256,
    noise: float = 0.5,
    seed: int = 0,
) -> Path:
    """Write OUT.npz with x, y, x_test, y_test, classes and layout NCL (test drawn from another
    seed)."""
    x, y = make_signals(n_train, length, noise, seed)
    arrays = {"x": x, "y": y, "classes": np.array(CLASSES), "layout": np.array("NCL")}
    if n_test:
        x_test, y_test = make_signals(n_test, length, noise, seed + 1_000_003)
        arrays |= {"x_test": x_test, "y_test": y_test}
    out = Path(out)
    with atomic_path(out) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)
    return out
