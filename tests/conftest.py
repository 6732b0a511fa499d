import os

import pytest
import torch

# Deterministic, single-threaded-friendly tests on the 2-core CI machine.
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
