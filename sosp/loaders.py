"""Batches for training and evaluation, two interchangeable ways:

- `TensorLoader`, the fast path: the whole split as one tensor on the device, shuffled with a
  seeded generator, random crops (zero padding) and flips as batched tensor ops, normalized on
  the device (after cifar10-airbench).
- `torch_loader`, the reference path: torchvision datasets and transforms through a DataLoader.

Both draw every random number of epoch e from a generator seeded by (seed, e), so an epoch's
batches do not depend on what ran before: a resumed run sees the same batches. Both shard the
samples over DDP ranks.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, DistributedSampler

from sosp import data

Batch = tuple[torch.Tensor, torch.Tensor]
CROP_PADDING = 4


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of every random draw in epoch `epoch` of a run with seed `seed`."""
    return seed * 1_000_003 + epoch


class TensorLoader:
    """Batches of raw images `x` [N, C, H, W] (uint8, or float in [0, 1]) and labels `y`, held on
    `device`; yields normalized float images. `augment`: random crop with `CROP_PADDING` zero
    pixels and horizontal flip. `rank`/`world` take every world-th sample of the permutation."""

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        meta: data.DatasetInfo,
        batch_size: int,
        *,
        shuffle: bool,
        augment: bool,
        device: str | torch.device = "cpu",
        seed: int = 0,
        rank: int = 0,
        world: int = 1,
    ):
        self.x, self.y = x.to(device), y.to(device)
        self.scale = 255.0 if x.dtype == torch.uint8 else 1.0
        shape = (1, -1, 1, 1)
        self.mean = torch.tensor(meta.mean, device=device).view(shape)
        self.std = torch.tensor(meta.std, device=device).view(shape)
        self.batch_size, self.shuffle, self.augment = batch_size, shuffle, augment
        self.seed, self.rank, self.world, self.epoch = seed, rank, world, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return math.ceil(math.ceil(len(self.y) / self.world) / self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        device = self.x.device
        g = torch.Generator(device=device).manual_seed(epoch_seed(self.seed, self.epoch))
        n = len(self.y)
        if self.shuffle:
            order = torch.randperm(n, generator=g, device=device)
        else:
            order = torch.arange(n, device=device)
        order = order[self.rank :: self.world]
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            x = self.x[idx]
            if self.augment:
                x = random_flip(random_crop(x, CROP_PADDING, g), g)
            yield (x.float() / self.scale - self.mean) / self.std, self.y[idx]


def random_crop(x: torch.Tensor, pad: int, g: torch.Generator) -> torch.Tensor:
    """Per-image random crops of the zero-padded batch x [B, C, H, W], same size as x."""
    b, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (b, 1), generator=g, device=x.device)
    dx = torch.randint(0, 2 * pad + 1, (b, 1), generator=g, device=x.device)
    rows = (dy + torch.arange(h, device=x.device))[:, None, :, None]
    cols = (dx + torch.arange(w, device=x.device))[:, None, None, :]
    batch = torch.arange(b, device=x.device)[:, None, None, None]
    chan = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch, chan, rows, cols]


def random_flip(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Each image of x [B, C, H, W] mirrored left-right with probability 1/2."""
    flip = torch.rand(len(x), generator=g, device=x.device) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(3), x)


class _SeededLoader:
    """A DataLoader whose shuffle and (main-process) augmentation are seeded per epoch."""

    def __init__(self, loader: DataLoader, seed: int):
        self.loader, self.seed, self.epoch = loader, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if isinstance(self.loader.sampler, DistributedSampler):
            self.loader.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Batch]:
        s = epoch_seed(self.seed, self.epoch)
        self.loader.generator = torch.Generator().manual_seed(s)
        torch.manual_seed(s)  # transforms in the main process draw from the global generator
        yield from self.loader


def torch_loader(
    dataset: torch.utils.data.Dataset,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int = 0,
    workers: int = 0,
    rank: int = 0,
    world: int = 1,
    pin_memory: bool = False,
) -> _SeededLoader:
    """The reference path: a DataLoader over a torchvision-style dataset."""
    sampler = None
    if world > 1:
        sampler = DistributedSampler(dataset, world, rank, shuffle=shuffle, seed=seed)
    loader = DataLoader(
        dataset,
        batch_size,
        shuffle=shuffle and sampler is None,
        sampler=sampler,
        num_workers=workers,
        pin_memory=pin_memory,
        persistent_workers=workers > 0,
    )
    return _SeededLoader(loader, seed)


def pruning_samples(
    dataset: str, root=None, download: bool = False, batch_size: int = 128, seed: int = 0
) -> DataLoader:
    """Batches of the training split of `dataset`, unaugmented, in an order drawn by `seed`:
    the samples saliencies are computed on (their first N')."""
    train = data.load(dataset, "train", root=root, augment=False, download=download)
    g = torch.Generator().manual_seed(seed)
    return DataLoader(train, batch_size=batch_size, shuffle=True, generator=g)
