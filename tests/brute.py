"""Brute-force references on TinyNet: explicit Jacobians by torch.func, per-structure sums."""

import torch
from torch.func import functional_call, jacrev

from sosp.structures import analyze, structure_params
from tests.tiny_nets import TinyNet, randomized


def setup(loss="cross_entropy", n=6, seed=0):
    torch.manual_seed(seed)
    model = randomized(TinyNet(), seed)
    x = torch.randn(n, 2, 4, 4, dtype=torch.float64)
    y = torch.randint(3, (n,)) if loss == "cross_entropy" else torch.randn(n, 3).double()
    return model, analyze(model, (2, 4, 4)), x, y


def structure_param_list(graph):
    """[(param name, param, layer name)] of all structures' parameters, in structure order."""
    return [
        (n, p, name)
        for name, layer in graph.layers.items()
        if layer.prunable
        for n, p in structure_params(graph, name)
    ]


def per_structure(graph, per_param):
    """Reduce {param name: tensor [..., *param.shape]} with theta_p weights to [..., S]."""
    params = dict(graph.gm.named_parameters())
    cols = []
    for name, layer in graph.layers.items():
        if not layer.prunable:
            continue
        total = 0
        for pname, p in structure_params(graph, name):
            t = per_param[pname] * params[pname]
            total = total + t.reshape(*t.shape[: t.dim() - p.dim()], p.shape[0], -1).sum(-1)
        cols.append(total)
    return torch.cat(cols, -1)


def brute_jacobian(model, graph, x):
    """J[n, d, s] = sum_{p in s} theta_p df_d(x_n)/dtheta_p from the full parameter Jacobian."""
    params = {k: v.detach() for k, v in model.named_parameters()}
    jac = jacrev(lambda p: functional_call(model, p, (x,)))(params)  # each [N, D, *shape]
    return per_structure(graph, jac)


def ascending_keeping_one(scores: dict, layer_sizes: dict | None = None) -> list:
    """Structures by ascending score, skipping any that would empty its layer: the order a
    score-based method must return (every layer keeps at least one structure)."""
    if layer_sizes is None:
        layer_sizes = {}
        for name, _ in scores:
            layer_sizes[name] = layer_sizes.get(name, 0) + 1
    used: dict = {}
    out = []
    for s in sorted(scores, key=scores.get):
        if used.get(s[0], 0) < layer_sizes[s[0]] - 1:
            used[s[0]] = used.get(s[0], 0) + 1
            out.append(s)
    return out
