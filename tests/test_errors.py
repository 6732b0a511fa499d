"""User-facing errors stay one line, also when torch re-creates them from a DataLoader worker."""

import pytest
import torch

from sosp.errors import BadInput, UnknownName, one_line


class _Unreadable(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int):
        raise BadInput(f"item {i} is unreadable: replace it")


@pytest.mark.parametrize("workers", [0, 1])
def test_error_from_a_dataloader_worker_is_one_line(workers):
    """torch wraps a worker's exception in "Caught ... Original Traceback ..."; its message
    is still the one line raised."""
    loader = torch.utils.data.DataLoader(_Unreadable(), batch_size=2, num_workers=workers)
    with pytest.raises(BadInput) as caught:
        next(iter(loader))
    assert str(caught.value) == "item 0 is unreadable: replace it"


def test_one_line_keeps_plain_messages():
    assert one_line("a: b") == "a: b"
    assert str(UnknownName("unknown model 'x'")) == "unknown model 'x'"
