"""The fast path for image-file datasets (ImageNet): DataLoader workers only read each file's
bytes; the JPEGs of a batch are decoded together on the device (nvJPEG through
`torchvision.io.decode_jpeg` on a GPU, libjpeg-turbo on the CPU), then cropped, resized,
flipped and normalized there with torchvision's own functions.

The images are the reference path's (`loaders.torch_loader` over `data.load`: PIL, then
torchvision transforms): training takes torchvision's `RandomResizedCrop.get_params` crop
(scale 0.08-1, aspect 3/4-4/3) resized to 224 and a flip with probability 1/2, evaluation a
resize of the short side to 256 and the centre 224 crop, all on uint8 images as torchvision's
v2 transforms do them. Only the decoder differs (nvJPEG's IDCT rounds a few pixel values by
one or two levels). Every random draw of batch b in epoch e comes from a seed of (seed, e, b),
so a resumed run sees the same crops, and DDP ranks shard the files by `DistributedSampler`.

Files nvJPEG cannot decode (ImageNet holds a few CMYK JPEGs and one PNG) fall back to
`torchvision.io.decode_image` on the CPU; a file nothing can decode stops with its path.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import (
    DataLoader,
    Dataset,
    DistributedSampler,
    RandomSampler,
    SequentialSampler,
)

from sosp.data import DatasetInfo
from sosp.errors import BadInput
from sosp.loaders import Batch, epoch_seed

SCALE = (0.08, 1.0)  # RandomResizedCrop's defaults
RATIO = (3 / 4, 4 / 3)
RESIZE = 256  # evaluation: short side, before the centre crop


class _Indexed(Dataset):
    """(bytes, label, index) of a (bytes, label) dataset: the index names a file that fails."""

    def __init__(self, files: Dataset):
        self.files = files

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, int]:
        encoded, label = self.files[i]
        return encoded, label, i


def _packed(items: list) -> tuple[torch.Tensor, list[int], torch.Tensor, list[int]]:
    """Collate a batch of (bytes, label, index) without stacking (files differ in length):
    the files' bytes joined into one tensor, with their lengths, so that a worker hands the
    main process one shared-memory block per batch, not one per file."""
    encoded, labels, index = zip(*items, strict=True)
    lengths = [len(e) for e in encoded]
    return torch.cat(encoded), lengths, torch.tensor(labels, dtype=torch.long), list(index)


class JpegLoader:
    """Batches (normalized float images [B, 3, S, S], labels [B]) on `device` from `files`, a
    dataset of (encoded bytes, label) such as `data.files("imagenet", "train")`; S is
    `meta.image_size`. `augment`: random resized crop and flip, else resize and centre crop.
    `workers` DataLoader processes read the files; `rank`/`world` shard them for DDP."""

    def __init__(
        self,
        files: Dataset,
        meta: DatasetInfo,
        batch_size: int,
        *,
        shuffle: bool,
        augment: bool,
        device: str | torch.device = "cpu",
        seed: int = 0,
        workers: int = 4,
        rank: int = 0,
        world: int = 1,
    ):
        self.files, self.meta, self.augment = files, meta, augment
        self.device, self.seed, self.epoch = torch.device(device), seed, 0
        self.generator = torch.Generator()  # the shuffle's, re-seeded every epoch
        if world > 1:
            sampler = DistributedSampler(files, world, rank, shuffle=shuffle, seed=seed)
        elif shuffle:
            sampler = RandomSampler(files, generator=self.generator)
        else:
            sampler = SequentialSampler(files)
        self.sampler = sampler
        self.loader = DataLoader(
            _Indexed(files),
            batch_size,
            sampler=sampler,
            num_workers=workers,
            collate_fn=_packed,
            persistent_workers=workers > 0,
            prefetch_factor=4 if workers > 0 else None,
        )
        shape = (1, -1, 1, 1)
        self.mean = torch.tensor(meta.mean, device=self.device).view(shape)
        self.std = torch.tensor(meta.std, device=self.device).view(shape)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        if isinstance(self.sampler, DistributedSampler):
            self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Batch]:
        seed = epoch_seed(self.seed, self.epoch)
        self.generator.manual_seed(seed)
        for b, (joined, lengths, labels, index) in enumerate(self.loader):
            images = self._decoded(list(torch.split(joined, lengths)), index)
            x = self._transformed(images, seed * 100_003 + b)
            x = (x.float() / 255.0 - self.mean) / self.std
            yield x, labels.to(self.device, non_blocking=True)

    def _decoded(self, encoded: list[torch.Tensor], index: list[int]) -> list[torch.Tensor]:
        """[3, H, W] uint8 RGB images on the device, one per file."""
        from torchvision.io import ImageReadMode, decode_jpeg

        try:
            return decode_jpeg(encoded, mode=ImageReadMode.RGB, device=self.device)
        except RuntimeError:  # one file in the batch is no plain JPEG: decode each alone
            return [self._decoded_one(e, i) for e, i in zip(encoded, index, strict=True)]

    def _decoded_one(self, encoded: torch.Tensor, index: int) -> torch.Tensor:
        from torchvision.io import ImageReadMode, decode_image, decode_jpeg

        try:
            return decode_jpeg(encoded, mode=ImageReadMode.RGB, device=self.device)
        except RuntimeError:
            pass
        try:  # CMYK JPEGs, PNGs named .JPEG: torchvision's general decoder on the CPU
            return decode_image(encoded, mode=ImageReadMode.RGB).to(self.device)
        except RuntimeError as e:
            path = self._path(index)
            reason = " ".join(str(e).split())[:200]
            raise BadInput(
                f"{path} is not a readable image ({reason}): replace it with a good copy or "
                "delete it"
            ) from None

    def _path(self, index: int) -> str:
        samples = getattr(self.files, "samples", None)
        return samples[index][0] if samples is not None else f"file number {index}"

    def _transformed(self, images: list[torch.Tensor], seed: int) -> torch.Tensor:
        """[B, 3, S, S] uint8: each image cropped and resized, flipped where drawn."""
        from torchvision.transforms.v2 import functional as TF

        size = self.meta.image_size
        if not self.augment:
            return torch.stack(
                [TF.center_crop(TF.resize(im, [RESIZE], antialias=True), [size]) for im in images]
            )
        boxes, flips = random_crops(images, seed)
        out = torch.stack(
            [
                TF.resized_crop(im, *box, [size, size], antialias=True)
                for im, box in zip(images, boxes, strict=True)
            ]
        )
        return torch.where(flips.to(out.device)[:, None, None, None], out.flip(3), out)


def random_crops(
    images: list[torch.Tensor], seed: int
) -> tuple[list[tuple[int, int, int, int]], torch.Tensor]:
    """torchvision's RandomResizedCrop boxes (top, left, height, width) for images [3, H, W]
    and flips [B] bool, drawn from the global generator seeded with `seed` inside a fork (the
    caller's random state is left as it was)."""
    from torchvision.transforms import RandomResizedCrop

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        boxes = [
            RandomResizedCrop.get_params(_shape_only(im), list(SCALE), list(RATIO)) for im in images
        ]
        flips = torch.rand(len(images)) < 0.5
    return boxes, flips


def _shape_only(image: torch.Tensor) -> torch.Tensor:
    """A tensor of `image`'s shape that holds no memory (get_params reads only the shape)."""
    return torch.empty(image.shape, device="meta")
