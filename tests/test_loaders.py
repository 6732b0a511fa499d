"""Loaders: batched crops and flips equal per-image ones, epochs are seeded by (seed, epoch),
DDP ranks partition an epoch, and the fast path yields what the reference path yields."""

import torch

from sosp import data, loaders


def test_batched_crop_equals_per_image_crops():
    """Image i of the batched crop is the padded image i cut at its own random offset."""
    x = torch.randint(0, 256, (6, 3, 8, 8), dtype=torch.uint8)
    out = loaders.random_crop(x, 4, torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(0)
    dy = torch.randint(0, 9, (6, 1), generator=g)
    dx = torch.randint(0, 9, (6, 1), generator=g)
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    for i in range(6):
        want = padded[i, :, dy[i, 0] : dy[i, 0] + 8, dx[i, 0] : dx[i, 0] + 8]
        assert torch.equal(out[i], want)


def test_flip_mirrors_about_half_the_images():
    x = torch.arange(2000 * 4, dtype=torch.float32).view(2000, 1, 1, 4)
    out = loaders.random_flip(x, torch.Generator().manual_seed(0))
    flipped = (out != x).any(dim=(1, 2, 3))
    assert torch.equal(out[flipped], x[flipped].flip(3))
    assert 900 < int(flipped.sum()) < 1100


def digits_loader(**kw):
    x, y = data.tensors("digits", "train")
    return loaders.TensorLoader(x, y, data.info("digits"), 100, **kw)


def test_epochs_are_seeded_by_seed_and_epoch():
    """The same (seed, epoch) gives the same batches whatever ran before; another epoch differs."""
    a, b = digits_loader(shuffle=True, augment=True), digits_loader(shuffle=True, augment=True)
    a.set_epoch(3)
    b.set_epoch(1)
    list(b)
    b.set_epoch(3)
    first_a, first_b = next(iter(a)), next(iter(b))
    assert torch.equal(first_a[0], first_b[0]) and torch.equal(first_a[1], first_b[1])
    b.set_epoch(4)
    assert not torch.equal(next(iter(b))[1], first_a[1])


def test_ranks_partition_the_epoch():
    labels = [
        torch.cat([y for _, y in digits_loader(shuffle=True, augment=False, rank=r, world=3)])
        for r in range(3)
    ]
    assert sum(len(t) for t in labels) == 1437
    whole = torch.cat([y for _, y in digits_loader(shuffle=True, augment=False)])
    assert sorted(torch.cat(labels).tolist()) == sorted(whole.tolist())


def test_tensor_path_normalizes_like_the_reference_path():
    """Unshuffled, unaugmented batches of the fast path equal the torchvision dataset's."""
    fast = torch.cat([x for x, _ in digits_loader(shuffle=False, augment=False)])
    ref = data.load("digits", "train").tensors[0]
    torch.testing.assert_close(fast, ref)
