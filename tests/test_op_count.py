"""Operator calls (`sosp.op_count`): the counter counts exactly the ATen calls made while it is
active; under `count_steps` the prune report holds them per step, and the steps other than the
saliency make about as many calls however many structures each layer has."""

import pytest
import torch
import torch.nn.functional as F
import torchvision

import sosp
from sosp import models
from sosp.op_count import OpCounter, count_steps
from sosp.timing import StepTimer

STEPS = ("tracing", "counting", "saliency", "selection", "surgery")


def test_counter_counts_each_operator_call_by_name():
    """`a + b` then `torch.mm(a, b)`: two calls, one of each, and none after the block."""
    a, b = torch.ones(2, 2), torch.ones(2, 2)
    with OpCounter() as ops:
        a + b
        torch.mm(a, b)
    a * b  # outside: not counted
    assert ops.total == 2
    assert dict(ops.by_name) == {"aten.add.Tensor": 1, "aten.mm.default": 1}


def test_counters_nest_and_step_timer_counts_per_step_only_when_asked():
    """An outer counter sees the calls of an inner one; a `StepTimer` counts per step (adding up
    repeated steps) inside `count_steps` or with `count_ops=True`, and not otherwise."""
    a = torch.ones(3)
    with OpCounter() as outer:
        with OpCounter() as inner:
            a + a
        a - a
    assert (inner.total, outer.total) == (1, 2)

    timer = StepTimer("cpu")
    with timer.step("add"):
        a + a
    assert not timer.count_ops and timer.ops == {}
    with count_steps():
        counted = StepTimer("cpu")
    for _ in range(2):
        with counted.step("add"):
            a + a
    assert counted.count_ops and counted.ops == {"add": 2} and set(counted.seconds) == {"add"}
    assert counted.copy().ops == {"add": 2}


@pytest.fixture(scope="module")
def counted() -> dict:
    """{(method, width): report} of SOSP-H and SOSP-I on ResNet-20 at 8x8,
    widths 1 and 2, pruned under `count_steps`."""
    g = torch.Generator().manual_seed(0)
    batch = [(torch.randn(16, 1, 8, 8, generator=g), torch.randint(10, (16,), generator=g))]
    out = {}
    for width in (1, 2):
        torch.manual_seed(0)
        model = models.create("resnet20", 10, in_channels=1, image_size=8, widths={"*": width})
        for method in ("sosp_h", "sosp_i"):
            with count_steps():
                r = sosp.prune(model, method, 0.5, batch, exclude="resnet_downsample", n_samples=16)
            out[method, width] = r.report
    return out


@pytest.mark.parametrize("method", ["sosp_h", "sosp_i"])
def test_step_calls_do_not_grow_with_the_structures_beyond_a_bound(counted, method):
    """Widening ResNet-20 twofold doubles the structures (688 -> 1376); per step, what holds
    today (measured: tracing 210 calls at both widths; counting 242 -> 245 for SOSP-H, 236 ->
    239 for SOSP-I, the pruned networks differing; surgery 408 -> 414, 396 -> 402;
    selection 62 and 84 at both widths, where it was 1400 -> 2776 while `selection._one_order`
    read each structure's index with a select and an item):
    - tracing makes the same calls;
    - counting, surgery and selection differ by at most 16 calls;
    - the saliency: only that it is counted and positive (no bound asserted).
    Outside `count_steps` the report has no `ops_by_step`."""
    small, wide = counted[method, 1], counted[method, 2]
    assert wide["structures"] == 2 * small["structures"] == 1376
    for r in (small, wide):
        assert set(r["ops_by_step"]) >= set(STEPS)
        assert all(r["ops_by_step"][s] > 0 for s in STEPS)
    ops1, ops2 = small["ops_by_step"], wide["ops_by_step"]
    assert ops2["tracing"] == ops1["tracing"]
    assert abs(ops2["counting"] - ops1["counting"]) <= 16
    assert abs(ops2["surgery"] - ops1["surgery"]) <= 16
    assert abs(ops2["selection"] - ops1["selection"]) <= 16


def test_no_counts_in_the_report_when_not_counting():
    model = models.create("resnet20", 10, in_channels=1, image_size=8)
    batch = [(torch.randn(8, 1, 8, 8), torch.randint(10, (8,)))]
    r = sosp.prune(model, "magnitude", 0.3, batch, n_samples=8)
    assert "ops_by_step" not in r.report


def _four_batches(shape: tuple[int, ...], classes: int) -> list:
    g = torch.Generator().manual_seed(0)
    return [
        (torch.randn(4, *shape, generator=g), torch.randint(classes, (4,), generator=g))
        for _ in range(4)
    ]


def _t_fb_calls(model: torch.nn.Module, batches: list) -> int:
    """Operator calls of one forward+backward pass per batch (mask_time.py's T_fb)."""
    with OpCounter() as ops:
        for x, y in batches:
            model.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
    return ops.total


# (saliency, whole prune) budgets in multiples of T_fb's calls over the same 4 batches
BUDGETS = {"sosp_h": (3.0, 4.0), "sosp_i": (2.0, 2.75)}


@pytest.mark.parametrize("name", ["resnet56", "resnet50"])
def test_mask_operator_calls_stay_within_a_budget_of_t_fb(name):
    """SOSP's mask on a GPU is bound by its kernel launches, about one per operator call: per
    T_fb call (one forward+backward per batch, 4 batches of 4; ResNet-56 at 8x8, ResNet-50
    at 32x32, stream coupling) the SOSP-H saliency makes at most 3 calls and a whole
    `sosp.prune` (tracing, saliency, selection, surgery, counting) at most 4; SOSP-I with
    one sampled label at most 2 and 2.75 (within the (k + 2)x of k labels). Measured
    (ResNet-56 / ResNet-50): SOSP-H saliency 2.58 / 2.60, whole prune 3.27 / 3.31; SOSP-I
    1.65 / 1.66 and 2.35 / 2.38. Before `sosp.gates` ResNet-56 made 8.3 and 10.1 (SOSP-H);
    with a linear gate on each conv and each BatchNorm and autograd's ReLU, 3.47 and 4.16."""
    torch.manual_seed(0)
    if name == "resnet56":
        model, batches = models.create(name, 10, image_size=8), _four_batches((3, 8, 8), 10)
    else:
        model = torchvision.models.resnet50(width_per_group=16)  # S x S of SOSP-I: 135 MB
        batches = _four_batches((3, 32, 32), 1000)
    t_fb = _t_fb_calls(model, batches)
    for method, options in (("sosp_h", {}), ("sosp_i", {"label_samples": 1})):
        with count_steps(), OpCounter() as total:
            r = sosp.prune(model, method, 0.5, batches, n_samples=16, coupling="stream", **options)
        saliency, whole = BUDGETS[method]
        assert r.report["ops_by_step"]["saliency"] <= saliency * t_fb, method
        assert total.total <= whole * t_fb, method
