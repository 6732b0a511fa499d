"""Datasets: the embedded digits, CIFAR through torchvision's real pickled-batch reader, and
clear errors for missing data."""

import pickle

import pytest
import torch

from sosp import data
from sosp.errors import DatasetNotFound


def test_digits_split_is_fixed_and_complete():
    """digits: 1437 train + 360 test of the 1797 real images, the same split every call."""
    train, test = data.load("digits", "train"), data.load("digits", "test")
    assert (len(train), len(test)) == (1437, 360)
    assert torch.equal(train.tensors[0], data.load("digits", "train").tensors[0])
    assert set(test.tensors[1].tolist()) == set(range(10))


def test_digits_cache_holds_scikit_learns_split_and_a_damaged_cache_is_remade(
    tmp_path, monkeypatch
):
    """The cached split equals the one scikit-learn makes, element for element; a cache file
    that is damaged is ignored and written anew; a cache folder that cannot be written is
    skipped without an error."""
    from sosp.data import digits

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    made = digits.made_split(0, 0.2)
    first = digits.digits_split()  # made and cached
    path = digits.cache_file(0, 0.2)
    assert path.is_file()
    cached = digits.digits_split()  # read back
    for a, b, c in zip(made, first, cached, strict=True):
        assert (a == b).all() and (a == c).all() and a.dtype == c.dtype
        assert a.strides == b.strides == c.strides  # one layout: a conv rounds by layout
    path.write_bytes(b"not an npz")
    assert all((a == b).all() for a, b in zip(made, digits.digits_split(), strict=True))
    assert path.read_bytes()[:2] == b"PK"  # rewritten as an npz (a zip)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "a_file"))
    (tmp_path / "a_file").write_text("a file where the cache folder would go")
    assert all((a == b).all() for a, b in zip(made, digits.digits_split(), strict=True))


def test_digits_normalization_constants_match_the_training_split():
    """The documented mean/std are those of the training split (to 4 decimals)."""
    x = data.load("digits", "train").tensors[0]
    assert abs(x.mean().item()) < 1e-3 and abs(x.std().item() - 1) < 1e-3


def test_cifar_loads_real_pickled_batches(tmp_path):
    """The CIFAR path reads pickled batches through torchvision and normalizes each channel
    with the CIFAR constants; test images are not augmented."""
    folder = data.write_fake_cifar10(tmp_path, per_batch=4)
    train = data.load("cifar10", "train", root=tmp_path)
    test = data.load("cifar10", "test", root=tmp_path)
    assert (len(train), len(test)) == (20, 4)
    image, label = test[0]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32
    with open(folder / "test_batch", "rb") as f:
        raw = pickle.load(f, encoding="latin1")
    pixels = torch.tensor(raw["data"][0], dtype=torch.float32).view(3, 32, 32) / 255
    mean, std = torch.tensor(data.CIFAR_MEAN), torch.tensor(data.CIFAR_STD)
    assert torch.allclose(image, (pixels - mean[:, None, None]) / std[:, None, None], atol=1e-6)
    assert label == raw["labels"][0]


def test_cifar_train_augmentation_crops_and_flips(tmp_path):
    """Training images vary between reads (random crop/flip), test images do not."""
    data.write_fake_cifar10(tmp_path, per_batch=4)
    train = data.load("cifar10", "train", root=tmp_path)
    test = data.load("cifar10", "test", root=tmp_path)
    torch.manual_seed(0)
    assert any(not torch.equal(train[0][0], train[0][0]) for _ in range(10))
    assert torch.equal(test[0][0], test[0][0])


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "imagenet"])
def test_missing_dataset_names_the_folder(tmp_path, name, monkeypatch):
    """A missing dataset raises DatasetNotFound naming the folder it looked in."""
    monkeypatch.delenv("SOSP_IMAGENET", raising=False)
    with pytest.raises(DatasetNotFound, match=str(tmp_path)):
        data.load(name, "train", root=tmp_path)


def test_synthetic_is_seeded():
    """Synthetic tensors have the requested shape and are identical for the same seed."""
    a, b = data.synthetic(8, (3, 4, 4), 5, seed=1), data.synthetic(8, (3, 4, 4), 5, seed=1)
    assert a.tensors[0].shape == (8, 3, 4, 4) and torch.equal(a.tensors[0], b.tensors[0])
    assert int(a.tensors[1].max()) < 5


# -- bad data folders: one line, exit 2, nothing written --------------------------------------


def _jpeg(size: int = 8) -> bytes:
    """A real, small JPEG."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (size, size), (200, 30, 90)).save(buf, format="JPEG")
    return buf.getvalue()


def _imagenet(root, classes: int, images: int = 1, corrupt: bool = False):
    """`root`/imagenet/{train,val}/ with `classes` class folders of `images` JPEGs each (and,
    with `corrupt`, a truncated JPEG beside them in every class)."""
    good = _jpeg()
    for split in ("train", "val"):
        folder = root / "imagenet" / split
        folder.mkdir(parents=True)
        for c in range(classes):
            cls = folder / f"n{c:08d}"
            cls.mkdir()
            for i in range(images):
                (cls / f"img_{i}.JPEG").write_bytes(good)
            if corrupt:
                (cls / "broken.JPEG").write_bytes(good[: len(good) // 3])


def _no_class_folders(root):
    _imagenet(root, classes=0)
    return "imagenet", "has no class folders"


def _class_folders_without_images(root):
    _imagenet(root, classes=2, images=0)
    return "imagenet", "2 of the 2 class folders"


def _corrupt_jpeg(root):
    _imagenet(root, classes=1000, corrupt=True)
    return "imagenet", "broken.JPEG is not a readable image"


def _empty_cifar_folder(root):
    (root / "cifar-10-batches-py").mkdir()
    return "cifar10", "cifar10 is incomplete"


def _three_classes(root):
    _imagenet(root, classes=3)
    return "imagenet", "has 3 class folders but imagenet has 1000 classes"


@pytest.mark.parametrize(
    "make",
    [
        _no_class_folders,
        _class_folders_without_images,
        _corrupt_jpeg,
        _empty_cifar_folder,
        _three_classes,
    ],
)
def test_bad_data_folder_stops_with_one_line(tmp_path, monkeypatch, make):
    """`sosp prune` (the command that reads the data first and cheapest) on a data folder it
    cannot use exits 2 with one line naming the problem, before writing anything."""
    from tests.test_cli import run_sosp_here as run_sosp

    monkeypatch.delenv("SOSP_IMAGENET", raising=False)
    root, out = tmp_path / "data", tmp_path / "out"
    root.mkdir()
    dataset, expected = make(root)
    r = run_sosp(
        "prune",
        "--model",
        "resnet20",
        "--dataset",
        dataset,
        "--data-root",
        str(root),
        "--ratio",
        "0.5",
        "--n-samples",
        "20",
        "--batch-size",
        "10",
        "--device",
        "cpu",
        "--out",
        str(out),
    )
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert expected in r.stderr and str(root.resolve()) in r.stderr, r.stderr
    assert not out.exists()


def test_explicit_root_wins_over_sosp_imagenet_which_wins_over_the_default(tmp_path, monkeypatch):
    """`root=` (the CLI's --data-root) is looked in even where $SOSP_IMAGENET is set; without a
    root, $SOSP_IMAGENET is used, not $SOSP_DATA/imagenet."""
    elsewhere, data_dir = tmp_path / "elsewhere", tmp_path / "data"
    monkeypatch.setenv("SOSP_IMAGENET", str(elsewhere))
    monkeypatch.setenv("SOSP_DATA", str(data_dir))
    with pytest.raises(DatasetNotFound, match=str(tmp_path / "explicit" / "imagenet")):
        data.load("imagenet", "train", root=tmp_path / "explicit")
    with pytest.raises(DatasetNotFound, match=str(elsewhere / "train")):
        data.load("imagenet", "train")
    monkeypatch.delenv("SOSP_IMAGENET")
    with pytest.raises(DatasetNotFound, match=str(data_dir / "imagenet" / "train")):
        data.load("imagenet", "train")
