"""Brute-force references on TinyNet: the explicit Jacobian by torch.func.jacrev, the explicit
Hessian by torch.autograd.functional.hessian, and Eq. 3 and Eq. 7 assembled from them. The
structure -> parameter map is `tiny_nets.tiny_theta`, written by hand; nothing here calls the
code under test."""

import copy

import torch
import torch.nn.functional as F
from torch.func import functional_call, jacrev

from sosp.structures import analyze
from tests.tiny_nets import TinyNet, randomized


def setup(loss="cross_entropy", n=6, seed=0, affine=True):
    """(model, graph, x, y): TinyNet in float64 with random BN statistics."""
    torch.manual_seed(seed)
    model = randomized(TinyNet(affine), seed)
    x = torch.randn(n, 2, 4, 4, dtype=torch.float64)
    y = torch.randint(3, (n,)) if loss == "cross_entropy" else torch.randn(n, 3).double()
    return model, analyze(model, (2, 4, 4)), x, y


def loss_mean(loss, out, y):
    """L = (1/N) sum_n l(f(x_n), y_n), written independently of sosp.curvature."""
    if loss == "cross_entropy":
        return F.cross_entropy(out, y)
    return 0.5 * ((out - y) ** 2).sum() / len(out)


def per_structure(per_param, params, theta):
    """[..., S]: sum_{(p, i) in theta_s} sum over the slice of params[p][i] * per_param[p][..., i]
    for each structure s (per_param[p] has shape [..., *params[p].shape])."""
    cols = []
    for entries in theta.values():
        total = 0
        for name, i in entries:
            p = params[name]
            lead = per_param[name].dim() - p.dim()
            t = per_param[name].select(lead, i) * p[i]
            total = total + t.reshape(*t.shape[:lead], -1).sum(-1)
        cols.append(total)
    return torch.stack(cols, -1)


def params_of(model):
    return {k: v.detach() for k, v in model.named_parameters()}


def brute_jacobian(model, x, theta):
    """J[n, d, s] = sum_{p in theta_s} theta_p df_d(x_n)/dtheta_p from the full Jacobian."""
    params = params_of(model)
    jac = jacrev(lambda p: functional_call(model, p, (x,)))(params)  # each [N, D, *shape]
    return per_structure(jac, params, theta)


def brute_gauss_newton(model, x, y, loss, theta):
    """(G [S, S], lambda_1 [S]): G = (1/N) sum_n J_n^T R_n J_n, lambda_1 = theta_s . dL/dtheta."""
    J = brute_jacobian(model, x, theta)
    out = model(x).detach()
    if loss == "cross_entropy":
        p = out.softmax(1)
        R = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]
    else:
        R = torch.eye(out.shape[1], dtype=x.dtype).expand(len(x), -1, -1)
    G = torch.einsum("nds,nde,net->st", J, R, J) / len(x)
    params = params_of(model)
    grads = torch.func.grad(lambda p: loss_mean(loss, functional_call(model, p, (x,)), y))(params)
    return G, per_structure(grads, params, theta)


def brute_hessian_term(model, x, y, loss, theta):
    """[S] theta_s . (H theta_struc), H the explicit Hessian of L over every parameter that
    holds a part of some theta_s, theta_struc the sum of all theta_s."""
    params = params_of(model)
    names = sorted({name for entries in theta.values() for name, _ in entries})
    shapes = [params[n].shape for n in names]
    sizes = [s.numel() for s in shapes]

    def loss_of(flat):
        parts = {n: v.view(s) for n, v, s in zip(names, flat.split(sizes), shapes, strict=True)}
        return loss_mean(loss, functional_call(model, {**params, **parts}, (x,)), y)

    struc = {n: torch.zeros_like(params[n]) for n in names}
    for entries in theta.values():
        for name, i in entries:
            struc[name][i] = params[name][i]
    flat = torch.cat([struc[n].flatten() for n in names])
    flat_params = torch.cat([params[n].flatten() for n in names])
    H = torch.autograd.functional.hessian(loss_of, flat_params, vectorize=True)
    hv = {n: v.view(s) for n, v, s in zip(names, (H @ flat).split(sizes), shapes, strict=True)}
    return per_structure(hv, params, theta)


def brute_sosp_i_q(G, lambda1):
    """Eq. 3: Q = 1/2 |G| + diag(|lambda_1|)."""
    return 0.5 * G.abs() + lambda1.abs().diag()


def brute_sosp_h_scores(lambda1, h_theta):
    """Eq. 7: lambda_H(s) = |lambda_1(s)| + 1/2 |theta_s . H theta_struc|."""
    return lambda1.abs() + 0.5 * h_theta.abs()


def zeroed(model, entries):
    """A copy of `model` with the given (parameter, index) slices set to zero."""
    out = copy.deepcopy(model)
    params = dict(out.named_parameters())
    with torch.no_grad():
        for name, i in entries:
            params[name][i] = 0
    return out


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
