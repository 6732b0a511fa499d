"""Weight masks and the exact counts of a sparse network, against counts written out."""

import pytest
import torch

from sosp import paths, unstructured
from tests.sparse_nets import DENSE_FLOPS, INPUT_SHAPE, SparseTiny


def test_prunable_weights_are_those_of_conv_and_linear_layers():
    """Conv2d and Linear weights in module order; no bias, no BatchNorm."""
    assert list(unstructured.prunable(SparseTiny())) == list(DENSE_FLOPS)


def test_counts_are_exact_on_a_masked_tiny_net():
    """params, nonzero params, flops (positions x weights per layer) and the nonzero flops
    (positions x nonzero weights), and speed-up = their ratio, on a net with a known mask."""
    net = SparseTiny()
    torch.nn.init.constant_(net.bn1.bias, 0.5)  # no zero but the masked weights
    mask = unstructured.magnitude_mask(net, 0.7, "uniform")
    unstructured.apply(net, mask)
    c = unstructured.counts(net, INPUT_SHAPE)
    positions = {"conv1.weight": 36, "conv2.weight": 9, "mix.weight": 9, "fc.weight": 1}
    nonzero = {k: int(mask[k].sum()) for k in mask}
    assert c["flops"] == sum(DENSE_FLOPS.values())
    assert c["nonzero_flops"] == sum(positions[k] * nonzero[k] for k in mask)
    assert c["speedup"] == pytest.approx(c["flops"] / c["nonzero_flops"])
    all_params = sum(p.numel() for p in net.parameters())
    zeros = sum(int((~m).sum()) for m in mask.values())
    assert c["params"] == all_params
    assert c["nonzero_params"] == all_params - zeros
    assert c["sparsity"] == pytest.approx(zeros / sum(m.numel() for m in mask.values()))
    for k, m in mask.items():
        assert c["layer_sparsity"][k] == pytest.approx(float((~m).sum()) / m.numel())


def test_apply_zeroes_the_weights_and_their_momentum():
    """After an SGD step, `apply` leaves the masked weights and momentum buffers at zero and
    the kept ones untouched."""
    net = SparseTiny()
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    net(torch.randn(4, *INPUT_SHAPE)).sum().backward()
    opt.step()
    before = {k: w.detach().clone() for k, w in unstructured.prunable(net).items()}
    mask = unstructured.magnitude_mask(net, 0.5, "global")
    unstructured.apply(net, mask, opt)
    for k, w in unstructured.prunable(net).items():
        assert torch.equal(w[~mask[k]], torch.zeros_like(w[~mask[k]]))
        assert torch.equal(w[mask[k]], before[k][mask[k]])
        assert not opt.state[w]["momentum_buffer"][~mask[k]].any()


def test_magnitude_mask_keeps_the_largest_weights_per_layer():
    """Each layer keeps exactly its largest |w| (no kept weight smaller than a pruned one)."""
    net = SparseTiny()
    mask = unstructured.magnitude_mask(net, 0.6, "erk")
    for k, w in unstructured.prunable(net).items():
        a = w.detach().abs()
        assert a[mask[k]].min() >= a[~mask[k]].max()


def test_weight_mask_survives_the_model_file(tmp_path):
    """A model file with a weight mask reloads to the same zeros and the same mask."""
    from sosp import data, models

    meta = data.info("digits")
    net = models.create_widened("vgg11_quarter", meta)
    mask = unstructured.magnitude_mask(net, 0.8, "lamp")
    unstructured.apply(net, mask)
    arch = {"model": "vgg11_quarter", "dataset": "digits", unstructured.MODEL_FILE_KEY: mask}
    paths.save_model(tmp_path / "m.pt", net, arch)
    ckpt = paths.read_model_file(tmp_path / "m.pt")
    back = paths.model_from_file(ckpt)
    got = unstructured.mask_of(ckpt)
    assert all(torch.equal(got[k], mask[k]) for k in mask)
    assert unstructured.counts(back, meta.input_shape) == unstructured.counts(net, meta.input_shape)
