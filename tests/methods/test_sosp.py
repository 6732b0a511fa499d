"""The assembled SOSP saliencies against brute force: SOSP-I's Q (Eq. 3) and its greedy order
(Eq. 4), SOSP-H's scores (Eq. 7), from the explicit Jacobian and Hessian of TinyNet."""

import math

import pytest
import torch

import sosp
from sosp import methods
from tests.brute import (
    brute_gauss_newton,
    brute_hessian_term,
    brute_sosp_h_scores,
    brute_sosp_i_q,
    setup,
)
from tests.tiny_nets import tiny_theta

RTOL = 1e-6


def literal_eq4(q: torch.Tensor, k: int) -> list[int]:
    """k steps of Eq. 4: argmin over s not in M of Q_ss + 2 sum_{s' in M} Q_ss'."""
    M: list[int] = []
    for _ in range(k):
        vals = [
            math.inf if s in M else q[s, s].item() + 2 * sum(q[s, t].item() for t in M)
            for s in range(len(q))
        ]
        M.append(min(range(len(q)), key=vals.__getitem__))
    return M


@pytest.mark.parametrize("loss", ["cross_entropy", "squared"])
def test_sosp_i_q_is_eq3(loss):
    """Q = 1/2 |G| + diag(|lambda_1|), with G of both signs (so each |.| and 1/2 matters)."""
    model, graph, x, y = setup(loss)
    G, lambda1 = brute_gauss_newton(model, x, y, loss, tiny_theta())
    assert (G < 0).any() and (lambda1 < 0).any() and (lambda1 > 0).any()
    ctx = methods.Context(model, graph, [(x[:4], y[:4]), (x[4:], y[4:])], loss, 6)
    q = methods.get("sosp_i")(ctx).q
    torch.testing.assert_close(q, brute_sosp_i_q(G, lambda1), rtol=RTOL, atol=1e-10)


def test_sosp_i_prunes_in_the_order_of_eq4():
    """sosp.prune's order for SOSP-I is the literal greedy of Eq. 4 on the brute-force Q."""
    model, graph, x, y = setup()
    q = brute_sosp_i_q(*brute_gauss_newton(model, x, y, "cross_entropy", tiny_theta()))
    r = sosp.prune(model, "sosp_i", 0.25, [(x, y)], n_samples=6)  # 3 of 12, below every cap
    assert r.order == [graph.structures[s] for s in literal_eq4(q, 3)]


def test_sosp_h_scores_are_eq7():
    """lambda_H = |lambda_1| + 1/2 |theta_s . H theta_struc|, with both terms of both signs;
    sosp.prune prunes the smallest."""
    model, graph, x, y = setup()
    theta = tiny_theta()
    _, lambda1 = brute_gauss_newton(model, x, y, "cross_entropy", theta)
    h_theta = brute_hessian_term(model, x, y, "cross_entropy", theta)
    assert (h_theta < 0).any() and (h_theta > 0).any() and (lambda1 < 0).any()
    want = brute_sosp_h_scores(lambda1, h_theta)
    ctx = methods.Context(model, graph, [(x[:2], y[:2]), (x[2:], y[2:])], "cross_entropy", 6)
    torch.testing.assert_close(methods.get("sosp_h")(ctx).scores, want, rtol=RTOL, atol=1e-10)
    r = sosp.prune(model, "sosp_h", 0.25, [(x, y)], n_samples=6)
    got = torch.tensor([r.scores[s] for s in graph.structures], dtype=want.dtype)
    torch.testing.assert_close(got, want, rtol=RTOL, atol=1e-10)
    assert r.order == [graph.structures[i] for i in want.argsort()[:3].tolist()]


@pytest.mark.parametrize("method", ["sosp_i", "sosp_h"])
def test_a_model_in_train_mode_gets_the_eval_mode_saliencies(method):
    """Handing the model over in train mode changes nothing: the saliencies are those of the
    eval-mode network (BN on running statistics), and the model is left in train mode."""
    model, graph, x, y = setup()
    theta = tiny_theta()
    G, lambda1 = brute_gauss_newton(model, x, y, "cross_entropy", theta)
    want = (
        brute_sosp_i_q(G, lambda1).diagonal()
        if method == "sosp_i"
        else brute_sosp_h_scores(lambda1, brute_hessian_term(model, x, y, "cross_entropy", theta))
    )
    model.train()
    r = sosp.prune(model, method, 0.25, [(x, y)], n_samples=6)
    assert model.training and model.bn1.training
    got = torch.tensor([r.scores[s] for s in graph.structures], dtype=want.dtype)
    torch.testing.assert_close(got, want, rtol=RTOL, atol=1e-10)
