import os

import pytest
import torch

# Deterministic, single-threaded-friendly tests on the 2-core CI machine. Under pytest-xdist
# (`-n 2`) each worker, and every process it starts, runs on one thread: two workers then fill
# the two cores without the spin-waiting of four threads on two.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
else:
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "device: runs on $SOSP_TEST_DEVICE (default cpu); benchmarks/gpu_check.sh "
        "runs these with SOSP_TEST_DEVICE=cuda",
    )


@pytest.fixture
def device() -> torch.device:
    """The device of the device-sensitive tests: $SOSP_TEST_DEVICE, default cpu."""
    return torch.device(os.environ.get("SOSP_TEST_DEVICE", "cpu"))


@pytest.fixture
def no_wandb_login(tmp_path, monkeypatch):
    """An environment where W&B finds no API key and no login: its home, config, cache and
    data folders under tmp_path, WANDB_API_KEY and WANDB_MODE unset."""
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.netrc login
    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb-home"))
