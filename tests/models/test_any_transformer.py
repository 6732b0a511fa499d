"""SOSP on timm's vision transformers and MLP models: the smallest member of every family of
`sosp.models.families.TRANSFORMERS` (random weights and norm affines, 32x32 inputs where its
constructor takes the size, 10 classes) either prunes with `sosp_h` and `sosp_i` (one sampled
label, on a subset of layers as in test_any_cnn) into a network that computes what the
soft-masked model computes, to 1e-9 of the output scale in float64, or stops with a message
naming the operation; the families of `MUST_PRUNE` prune."""

from __future__ import annotations

import pytest
import torch

import sosp
from sosp.errors import BadInput
from sosp.models import families
from sosp.structures import analyze
from sosp.surgery import indices_from_mask, soft_masked
from tests.models.test_any_cnn import (
    METHODS,
    RATIO,
    RELATIVE_TOLERANCE,
    names_the_stop,
    randomized_norms,
)

FAMILIES = families.transformer_families()
# vit and deit, and six other families (four of them variants in timm's vision_transformer.py)
MUST_PRUNE = (
    "vit", "deit", "deit_distilled", "deit3", "flexivit", "vit_registers", "poolformer", "pit",
)  # fmt: skip


@pytest.mark.parametrize("family", FAMILIES, ids=[f.name for f in FAMILIES])
def test_prunes_or_stops_naming_the_operation(family):
    """Pruned by each method, the physical network equals the soft-masked one; or the
    analysis stops with `Unsupported` (a `BadInput`) naming a node or module."""
    torch.manual_seed(0)
    model = randomized_norms(families.build(family)).double()
    shape = family.input_shape
    try:
        graph = analyze(model, shape)
    except BadInput as e:
        assert family.name not in MUST_PRUNE, str(e)
        assert names_the_stop(str(e), model), f"the message names no node or module: {e}"
        print(f"{family.model} stops: {families.short(str(e))}")
        return
    g = torch.Generator().manual_seed(1)
    batch = [
        (torch.randn(2, *shape, generator=g).double(), torch.randint(0, 10, (2,), generator=g))
    ]
    x = torch.randn(2, *shape, generator=g).double()
    for method, options in METHODS.items():
        r = sosp.prune(model, method, RATIO, batch, n_samples=2, **options(graph))
        soft = soft_masked(model, graph, indices_from_mask(graph, r.mask)).double().eval()
        with torch.no_grad():
            want, got = soft(x), r.model.double().eval()(x)
        scale, error = want.abs().max().item(), (got - want).abs().max().item()
        print(f"{family.model} {method}: {r.report['pruned_structures']} pruned, {error:.1e}")
        assert error <= RELATIVE_TOLERANCE * max(scale, 1.0), (family.model, method, error)
