"""Where a step's images come from: slices of the in-memory uint8 set, or DataLoader workers that
decode a folder too large for memory, in the same order; under torchrun each rank's share."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch.utils.data import DataLoader

from cnnlab.data.dataset import ImageSet
from cnnlab.data.lazy import Rows
from cnnlab.errors import CnnlabError


@dataclass
class World:
    """This process's place among the torchrun processes (rank 0 of 1 without torchrun)."""

    rank: int = 0
    size: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0


class Batches:
    """The batches of one epoch: a seeded permutation cut into global batches (the ragged tail
    dropped), each rank taking every size-th example of every global batch."""

    def __init__(self, data: ImageSet, batch_size: int, world: World, device: torch.device):
        if batch_size % world.size:
            raise CnnlabError(
                f"--batch-size {batch_size} must be a multiple of the {world.size} processes"
            )
        self.data, self.batch_size, self.world, self.device = data, batch_size, world, device
        self.images = data.images.to(device)
        self.labels = data.labels.to(device)
        self.workers = min(4, os.cpu_count() or 1) if data.streamed else 0
        self.steps_per_epoch = max(1, len(data) // batch_size)

    def indices(self, order: torch.Tensor) -> list[torch.Tensor]:
        b, world = self.batch_size, self.world
        return [
            order[s * b : (s + 1) * b][world.rank :: world.size]
            for s in range(self.steps_per_epoch)
        ]

    def epoch(self, order: torch.Tensor) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(uint8 images, labels) on the device, batch after batch."""
        batches = self.indices(order)
        if not self.data.streamed:
            for idx in batches:
                yield self.images[idx], self.labels[idx]
            return
        loader = DataLoader(
            Rows(self.images, self.data.labels),
            batch_sampler=[b.tolist() for b in batches],
            num_workers=self.workers,
            persistent_workers=False,
            pin_memory=self.device.type == "cuda",
        )
        for x, y in loader:
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
