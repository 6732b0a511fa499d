"""Network Slimming (Liu et al. 2017): prune the channels with the smallest |gamma| of the
BatchNorm that scales them. The L1 penalty on gamma that slimming trains with is a training
option (`sosp train --set bn_l1=1e-4`), since Table 1 reports slimming with and without it.

A channel's gamma is that of the BN that privately follows its conv. In a pre-activation
network (DenseNet) a channel is scaled by the BN of every later layer that reads it; it can be
removed only from all of them at once, so it scores the largest of those |gamma|.
"""

from __future__ import annotations

import torch

from sosp.errors import BadInput
from sosp.methods.base import Context, Saliency, per_layer_scores
from sosp.structures import Layer, StructureGraph


def slimming(ctx: Context) -> Saliency:
    consumer = _consumer_gammas(ctx.graph)

    def saliency(layer: Layer) -> torch.Tensor:
        if layer.bn is not None:
            return ctx.graph.gm.get_submodule(layer.bn).weight.detach().abs()
        ids = range(layer.first_id, layer.first_id + layer.out_channels)
        missing = [i - layer.first_id for i in ids if i not in consumer]
        if missing:
            raise BadInput(
                f"slimming needs a BatchNorm on every pruned channel; layer {layer.name!r} "
                f"channels {missing[:5]} have none (exclude the layer or choose another method)"
            )
        return torch.tensor([consumer[i] for i in ids])

    return per_layer_scores(ctx, saliency)


def _consumer_gammas(graph: StructureGraph) -> dict[int, float]:
    """Writer id -> the largest |gamma| of the consumer BatchNorms that read that channel."""
    nodes = {n.name: n for n in graph.gm.graph.nodes}
    out: dict[int, float] = {}
    for c in graph.consumers:
        m = graph.gm.get_submodule(c.name)
        if not isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            continue
        gammas = m.weight.detach().abs().tolist()
        for ch, writers in enumerate(graph.sources[nodes[c.node].args[0].name]):
            for w in writers:
                out[w] = max(out.get(w, 0.0), gammas[ch])
    return out


METHODS = {"slimming": slimming}
