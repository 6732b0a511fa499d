"""C-OBD: the true-Fisher diagonal from hooks equals per-example gradients from torch.func
with the same sampled labels; the filter saliency is sum_i F_ii w_i^2."""

import pytest
import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, vmap

import sosp
from baselines.c_obd import fisher_diagonal, sampled_labels
from sosp.errors import BadInput
from tests.brute import ascending_keeping_one, setup


def fisher_by_torch_func(model, batches, gen):
    """(1/N) sum_n g_n^2 with g_n from vmap(grad) of each sample's loss at a sampled label."""
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = {k: v for k, v in model.named_buffers()}

    def sample_loss(p, x, y):
        out = functional_call(model, (p, buffers), (x[None],))
        return F.cross_entropy(out, y[None])

    total, n = None, 0
    for x, _ in batches:
        y = sampled_labels(model(x), gen)
        g = vmap(grad(sample_loss), in_dims=(None, 0, 0))(params, x, y)
        sq = {k: (v**2).sum(0) for k, v in g.items()}
        total = sq if total is None else {k: total[k] + sq[k] for k in sq}
        n += len(x)
    return {k: v / n for k, v in total.items()}


def test_fisher_diagonal_matches_per_example_gradients():
    """Every prunable layer's F (weight and bias) equals the torch.func reference (float64)."""
    model, graph, x, y = setup(n=7)
    batches = [(x[:4], y[:4]), (x[4:], y[4:])]
    modules = {n: layer.module for n, layer in graph.layers.items() if layer.prunable}
    ours = fisher_diagonal(modules, model, batches, 7, torch.Generator().manual_seed(3))
    ref = fisher_by_torch_func(model.eval(), batches, torch.Generator().manual_seed(3))
    assert set(ours) == {"conv1", "conv2", "conv3", "hidden"}
    for name, per in ours.items():
        for kind, value in per.items():
            torch.testing.assert_close(value, ref[f"{name}.{kind}"], rtol=1e-10, atol=1e-14)
        assert per["weight"].abs().sum() > 0


def test_n_samples_cuts_the_data():
    """Only the first n_samples samples enter the average."""
    model, graph, x, y = setup(n=7)
    modules = {"conv1": graph.layers["conv1"].module}
    cut = fisher_diagonal(modules, model, [(x, y)], 3, torch.Generator().manual_seed(0))
    ref = fisher_by_torch_func(model.eval(), [(x[:3], y[:3])], torch.Generator().manual_seed(0))
    torch.testing.assert_close(cut["conv1"]["weight"], ref["conv1.weight"])


def test_saliency_is_fisher_weighted_squared_weights():
    """sosp.prune's c_obd scores are sum over the filter of F_ii w_i^2 (weight and bias)."""
    model, graph, x, y = setup(n=6)
    r = sosp.prune(model, "c_obd", 0.25, [(x, y)], n_samples=6, seed=5)
    modules = {n: layer.module for n, layer in graph.layers.items() if layer.prunable}
    fisher = fisher_diagonal(modules, model, [(x, y)], 6, torch.Generator().manual_seed(5))
    for name, m in modules.items():
        want = (fisher[name]["weight"] * m.weight.detach() ** 2).flatten(1).sum(1)
        if m.bias is not None:
            want += fisher[name]["bias"] * m.bias.detach() ** 2
        got = torch.tensor([r.scores[(name, c)] for c in range(len(want))], dtype=want.dtype)
        torch.testing.assert_close(got, want)
    assert r.order == ascending_keeping_one(r.scores)[: len(r.order)]


def test_needs_cross_entropy():
    model, _, x, y = setup(loss="squared")
    with pytest.raises(BadInput, match="cross_entropy"):
        sosp.prune(model, "c_obd", 0.25, [(x, y)], loss="squared", n_samples=6)
