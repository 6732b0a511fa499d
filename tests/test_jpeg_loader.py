"""The device-decoding JPEG loader gives the reference path's images (PIL and torchvision's
transforms), draws its crops from seeds of (seed, epoch, batch), shards files over DDP ranks,
and decodes or names every file ImageNet can hold. Real JPEGs written by the test."""

import io

import pytest
import torch
from PIL import Image
from torchvision.transforms import RandomResizedCrop
from torchvision.transforms.v2 import functional as TF

from sosp import data
from sosp.errors import BadInput
from sosp.jpeg_loader import RATIO, SCALE, JpegLoader, random_crops


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    root = tmp_path_factory.mktemp("jpegs")
    data.write_jpeg_folder(root, classes=10, per_class=(2, 1), sizes=(64, 128))
    return root


def _reference(root, split: str) -> torch.Tensor:
    """The reference path's uint8 images [N, 3, H, W] before cropping: PIL's decode."""
    ds = data.files("imagenette", split, root)
    return [TF.to_image(Image.open(path).convert("RGB")) for path, _ in ds.samples]


def _tolerance(device) -> float:
    """Mean |difference| allowed, in normalized units (1 grey level = 0.017): on the CPU both
    paths decode with libjpeg-turbo and agree; nvJPEG's IDCT and chroma upsampling differ from
    it by a few levels on these noisy images (0.037 on an H200, torch 2.11), while a wrong
    resize, crop offset, channel order or normalization gives far more."""
    return 1e-6 if device.type == "cpu" else 0.1


@pytest.mark.device
def test_evaluation_batches_are_the_reference_paths(root, device):
    """Resize 256 and centre crop 224 on the device give the DataLoader path's tensors."""
    meta = data.info("imagenette")
    loader = JpegLoader(
        data.files("imagenette", "test", root), meta, 4, shuffle=False, augment=False,
        device=device, workers=0,
    )  # fmt: skip
    reference = data.load("imagenette", "test", root)
    x, y = next(iter(loader))
    expected = torch.stack([reference[i][0] for i in range(4)])
    assert x.device.type == device.type and x.shape == (4, 3, 224, 224)
    diff = (x.cpu() - expected).abs()
    print(f"mean |diff| {diff.mean():.4f}, 99th percentile {diff.quantile(0.99):.4f}, max "
          f"{diff.max():.4f} (normalized units)")  # fmt: skip
    assert diff.mean() < _tolerance(device)
    if device.type == "cpu":
        assert diff.max() < 1e-4
    assert y.tolist() == [reference[i][1] for i in range(4)]


def test_crops_are_torchvisions_under_the_same_seed():
    """`random_crops` draws exactly RandomResizedCrop.get_params's boxes, then the flips, and
    leaves the caller's random state alone."""
    images = [torch.zeros(3, 100, 150), torch.zeros(3, 300, 64), torch.zeros(3, 80, 80)]
    state = torch.get_rng_state()
    boxes, flips = random_crops(images, seed=7)
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(7)
    expected = [RandomResizedCrop.get_params(im, list(SCALE), list(RATIO)) for im in images]
    assert boxes == expected and torch.equal(flips, torch.rand(3) < 0.5)


def test_training_batches_are_the_reference_transforms_of_the_drawn_crops(root):
    """A training batch is each PIL-decoded image cropped, resized to 224 and flipped as drawn
    (torchvision's resized_crop and flip), then normalized."""
    meta = data.info("imagenette")
    files = data.files("imagenette", "train", root)
    loader = JpegLoader(files, meta, 5, shuffle=False, augment=True, seed=3, workers=0)
    x, _ = next(iter(loader))
    originals = _reference(root, "train")[:5]
    boxes, flips = random_crops(originals, seed=loader_seed(loader, batch=0))
    expected = []
    for im, box, flip in zip(originals, boxes, flips, strict=True):
        out = TF.resized_crop(im, *box, [224, 224], antialias=True)
        expected.append(out.flip(2) if flip else out)
    mean, std = torch.tensor(meta.mean)[:, None, None], torch.tensor(meta.std)[:, None, None]
    expected = (torch.stack(expected).float() / 255 - mean) / std
    assert flips.any() and not flips.all()  # both cases are checked
    assert torch.allclose(x, expected, atol=1e-5)


def loader_seed(loader: JpegLoader, batch: int) -> int:
    from sosp.loaders import epoch_seed

    return epoch_seed(loader.seed, loader.epoch) * 100_003 + batch


def test_an_epoch_is_repeatable_and_epochs_differ(root):
    """Epoch e's batches depend only on (seed, e): a resumed run sees the same ones."""
    meta = data.info("imagenette")
    files = data.files("imagenette", "train", root)

    def epoch(e):
        loader = JpegLoader(files, meta, 8, shuffle=True, augment=True, seed=1, workers=0)
        loader.set_epoch(e)
        return [(x.clone(), y.clone()) for x, y in loader]

    first, again, second = epoch(2), epoch(2), epoch(3)
    assert all(
        torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
        for a, b in zip(first, again, strict=True)
    )
    assert not torch.equal(first[0][0], second[0][0])


def test_ranks_share_out_every_file_once(root):
    """With world 2, the ranks' epochs together hold every training file exactly once."""
    meta = data.info("imagenette")
    files = data.files("imagenette", "train", root)
    labels = []
    for rank in (0, 1):
        loader = JpegLoader(
            files, meta, 4, shuffle=True, augment=False, workers=0, rank=rank, world=2
        )
        labels += [int(v) for _, y in loader for v in y]
    assert sorted(labels) == sorted(files.targets)


def _odd_files(folder) -> None:
    """A CMYK JPEG and a PNG named .JPEG, as ImageNet holds."""
    buf = io.BytesIO()
    Image.new("CMYK", (70, 90), (10, 200, 30, 5)).save(buf, format="JPEG")
    (folder / "cmyk.JPEG").write_bytes(buf.getvalue())
    buf = io.BytesIO()
    Image.new("RGB", (90, 70), (10, 200, 30)).save(buf, format="PNG")
    (folder / "png.JPEG").write_bytes(buf.getvalue())


@pytest.mark.device
def test_cmyk_and_png_files_decode_and_a_broken_one_is_named(tmp_path, device):
    """Files nvJPEG cannot take fall back to torchvision's decoder as RGB; a truncated file
    stops the epoch with its path."""
    root = tmp_path / "data"
    data.write_jpeg_folder(root, classes=10, per_class=(1, 1))
    _odd_files(root / "imagenette" / "val" / "n00000000")
    meta = data.info("imagenette")
    files = data.files("imagenette", "test", root)
    loader = JpegLoader(files, meta, 12, shuffle=False, augment=False, device=device, workers=0)
    x, y = next(iter(loader))
    assert x.shape == (12, 3, 224, 224) and torch.isfinite(x).all() and len(y) == 12
    broken = root / "imagenette" / "val" / "n00000003" / "broken.JPEG"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    files = data.files("imagenette", "test", root)
    loader = JpegLoader(files, meta, 13, shuffle=False, augment=False, device=device, workers=0)
    with pytest.raises(BadInput, match="broken.JPEG is not a readable image"):
        next(iter(loader))


def test_worker_processes_give_the_same_batches(root):
    """Files read in 2 worker processes (one shared block per batch) give the batches of the
    main process alone."""
    meta = data.info("imagenette")
    files = data.files("imagenette", "train", root)

    def batches(workers):
        loader = JpegLoader(files, meta, 4, shuffle=True, augment=True, seed=2, workers=workers)
        return list(loader)

    alone, pooled = batches(0), batches(2)
    assert len(alone) == len(pooled) == 5
    assert all(torch.equal(a[0], b[0]) for a, b in zip(alone, pooled, strict=True))
