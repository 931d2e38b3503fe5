"""Image folders too large for memory: decoded from disk on demand, batch by batch.

`LazyImages` stands in for the (N, C, H, W) uint8 tensor of an ImageSet: indexing it with
a tensor of indices (or a slice) decodes just those files. The trainer feeds it through a
DataLoader with worker processes, in the same order and with the same batch augmentation
as the in-memory path, so both give the same results.

Every file passed a header check when the folder was indexed, but a file can still fail to
decode later (truncated data, a file changed on disk). Then:
  - without --skip-bad, `StreamedImageError` names the file in one line. It is raised in the
    DataLoader worker, and DataLoader re-raises it in the trainer as the same class built
    from a message that embeds the worker's traceback; the class keeps only the original
    line, so the trainer shows `Error: FILE: ...` like any other CnnlabError.
  - with --skip-bad, the image is replaced by the next image of the same class (in file
    order, wrapping round) that decodes, and one line on stderr says so. The batch keeps its
    size, its order and its labels, so a run stays deterministic: the same files give the
    same batches, in memory or streamed, in any worker.
"""

from __future__ import annotations

import os
import resource
import sys
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from cnnlab.data.images import MAX_PIXELS, open_image, to_array
from cnnlab.errors import CnnlabError

MEMORY_FRACTION = 0.25  # folders larger than this share of RAM (or of ulimit -v) are streamed


def check_budget(need: int, what: str) -> None:
    """Refuse, before allocating, `need` bytes over the memory budget: "WHAT, over the memory
    budget of B (set CNNLAB_MEMORY_BUDGET to raise it)"."""
    budget = memory_budget()
    if need > budget:
        raise CnnlabError(
            f"{what}, over the memory budget of {budget} (set CNNLAB_MEMORY_BUDGET to raise it)"
        )


def memory_budget() -> int:
    """Bytes an in-memory dataset may take: $CNNLAB_MEMORY_BUDGET, else a quarter of RAM (or
    of the address-space limit, when the process has one that is smaller)."""
    if os.environ.get("CNNLAB_MEMORY_BUDGET"):
        text = os.environ["CNNLAB_MEMORY_BUDGET"]
        try:
            return max(0, int(float(text)))
        except (ValueError, OverflowError):
            raise CnnlabError(
                f"CNNLAB_MEMORY_BUDGET={text!r}: expected a number of bytes"
            ) from None
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = 8 << 30
    limit = resource.getrlimit(resource.RLIMIT_AS)[0]
    if limit != resource.RLIM_INFINITY:
        total = min(total, limit)
    return int(total * MEMORY_FRACTION)


def _original_line(message: str) -> str:
    """The exception's own line out of DataLoader's 'Caught X in DataLoader worker process N.
    Original Traceback ...' text; any other message unchanged."""
    if not message.startswith("Caught ") or "\nOriginal Traceback" not in message:
        return message
    last = message.rstrip().splitlines()[-1]
    head, sep, rest = last.partition(": ")
    return rest if sep and head.rsplit(".", 1)[-1] == StreamedImageError.__name__ else last


class StreamedImageError(CnnlabError):
    """A streamed image that failed to decode: one line naming the file, even when raised in a
    DataLoader worker and rebuilt in the main process from the worker's traceback text."""

    def __init__(self, message: str):
        super().__init__(_original_line(str(message)))


class LazyImages:
    """Behaves like a uint8 tensor (N, C, H, W) whose rows are decoded from files when read."""

    dtype = torch.uint8
    ndim = 4

    def __init__(
        self,
        files: list[Path],
        channels: int,
        size: tuple[int, int],
        pad: tuple[int, int] = (0, 0),
        max_pixels: int = MAX_PIXELS,
        labels: list[int] | None = None,
        skip_bad: bool = False,
    ):
        self.files, self.channels, self.size = files, channels, size
        self.pad, self.max_pixels = pad, max_pixels
        self.labels = list(labels) if labels is not None else [0] * len(files)
        self.skip_bad = skip_bad
        self._bad: dict[int, str] = {}  # index -> error, per process (each worker learns its own)
        self._reported: set[int] = set()

    @property
    def shape(self) -> torch.Size:
        h, w = self.size
        return torch.Size(
            (len(self.files), self.channels, h + 2 * self.pad[0], w + 2 * self.pad[1])
        )

    def __len__(self) -> int:
        return len(self.files)

    def load(self, i: int) -> np.ndarray:
        """Row i decoded; a file that fails is an error, or with skip_bad its substitute's row."""
        if i not in self._bad:
            try:
                return self._decode(i)
            except CnnlabError as e:
                if not self.skip_bad:
                    raise StreamedImageError(f"{e} (pass --skip-bad to skip such files)") from None
                self._bad[i] = str(e)
        return self._substitute(i)

    def _decode(self, i: int) -> np.ndarray:
        img = open_image(self.files[i], max_pixels=self.max_pixels, draft=self.size)
        a = to_array(img, self.channels, self.size)
        ph, pw = self.pad
        if ph or pw:
            return np.pad(a, ((0, 0), (ph, ph), (pw, pw)))
        return a if a.flags.writeable else a.copy()  # torch warns on read-only arrays

    def _substitute(self, i: int) -> np.ndarray:
        """The next image of the same class (in file order, wrapping round) that decodes."""
        n, label = len(self.files), self.labels[i]
        for step in range(1, n):
            j = (i + step) % n
            if self.labels[j] != label or j in self._bad:
                continue
            try:
                row = self._decode(j)
            except CnnlabError as e:
                self._bad[j] = str(e)
                continue
            if i not in self._reported:
                self._reported.add(i)
                print(
                    f"skipped {self._bad[i]}; using {self.files[j]} in its place", file=sys.stderr
                )
            return row
        raise StreamedImageError(
            f"{self._bad[i]}; and no other image of its class decodes to take its place"
        )

    def __getitem__(self, index) -> torch.Tensor | LazyImages:
        if isinstance(index, slice):
            index = range(*index.indices(len(self)))
        elif torch.is_tensor(index):
            index = index.tolist()
        if isinstance(index, int):
            return torch.from_numpy(self.load(index))
        return (
            torch.from_numpy(np.stack([self.load(i) for i in index]))
            if len(index)
            else torch.empty(0, *self.shape[1:], dtype=torch.uint8)
        )

    def select(self, index: torch.Tensor) -> LazyImages:
        """A lazy subset (what ImageSet.subset needs), without decoding anything."""
        index = index.tolist()
        return LazyImages(
            [self.files[i] for i in index],
            self.channels,
            self.size,
            self.pad,
            self.max_pixels,
            [self.labels[i] for i in index],
            self.skip_bad,
        )

    def padded(self, ph: int, pw: int) -> LazyImages:
        return LazyImages(
            self.files,
            self.channels,
            self.size,
            (ph, pw),
            self.max_pixels,
            self.labels,
            self.skip_bad,
        )

    def to(self, device) -> LazyImages:
        return self  # rows move to the device batch by batch


class Rows(Dataset):
    """Dataset view of LazyImages for a DataLoader: item i -> (uint8 (C, H, W), label)."""

    def __init__(self, images: LazyImages, labels: torch.Tensor):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        """A decode failure raises StreamedImageError (one line, also out of a worker); with
        --skip-bad the row is the class-mate LazyImages.load puts in its place."""
        return torch.from_numpy(self.images.load(i)), self.labels[i]
