"""Measurements of Lubana & Dick's gradient-flow study during training (`FlowProbe`, a
`sosp.train.fit` hook), written to the run's flow.json:

- at chosen epochs (0: at initialization), per filter of every prunable layer, from its own
  weight theta_p: magnitude ||theta_p||^2, theta_p . g, theta_p . (H g) (g and H of the mean
  loss over N' samples, `sosp.curvature.flow_terms`), the loss-preservation importance
  sum_i |theta_i g_i|, and |theta_p . Delta theta_p|, Delta theta_p the change over the last
  epoch (half the change of ||theta_p||^2, to first order); and their correlations across
  filters (Pearson and Spearman): theta.Hg with theta.g (their Fig. 3) and |theta.Delta theta|
  with loss preservation (their Fig. 2);
- after every epoch, the early-bird mask distance (You et al. 2020): the fraction of filters
  whose membership changed in the mask of the `mask_fraction` filters with the smallest
  |BatchNorm scale| (the filter norm where a layer has no BatchNorm), against the last epoch's.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from sosp import paths
from sosp.curvature import Batch, flow_terms
from sosp.hooks import Hook
from sosp.io import atomic_write_json
from sosp.structures import StructureGraph, analyze


def pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    """Pearson correlation of two [n] vectors (nan when either is constant)."""
    a, b = a.double() - a.double().mean(), b.double() - b.double().mean()
    return float((a @ b) / (a.norm() * b.norm()))


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman rank correlation of two [n] vectors (ties broken by position)."""
    return pearson(_ranks(a), _ranks(b))


def _ranks(v: torch.Tensor) -> torch.Tensor:
    out = torch.empty(len(v), dtype=torch.float64)
    out[v.argsort()] = torch.arange(len(v), dtype=torch.float64)
    return out


def mask_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Fraction of entries where two bool masks [S] differ (normalized Hamming distance)."""
    return float((a != b).double().mean())


class FlowProbe(Hook):
    """Measures at `epochs` on `batches` (N' = `n_samples` samples; logits divided by
    `temperature`), for inputs of `input_shape`; `exclude`: layers left out, as in pruning."""

    name = "flow_probe"

    def __init__(
        self,
        epochs: Sequence[int],
        batches: Sequence[Batch],
        input_shape: Sequence[int],
        n_samples: int,
        temperature: float = 1.0,
        mask_fraction: float = 0.2,
        loss: str = "cross_entropy",
        exclude: Sequence[str] = (),
    ):
        self.epochs = sorted(set(epochs))
        self.batches = list(batches)
        self.input_shape = tuple(input_shape)
        self.n_samples = n_samples
        self.temperature = temperature
        self.mask_fraction = mask_fraction
        self.loss = loss
        self.exclude = tuple(exclude)
        self.records: list[dict] = []  # one per probed epoch
        self.distances: list[dict] = []  # one per epoch: {"epoch", "mask_distance"}
        self.previous: dict = {}  # what the next epoch compares with: weights and mask
        self.graph: StructureGraph | None = None
        self.out: Path | None = None

    def config(self) -> dict:
        return {
            "epochs": self.epochs,
            "n_samples": self.n_samples,
            "temperature": self.temperature,
            "mask_fraction": self.mask_fraction,
            "exclude": list(self.exclude),
        }

    def start(self, model: nn.Module, optimizer, out: Path) -> None:
        self.graph = analyze(model, self.input_shape, self.exclude)
        self.out = Path(out)

    def after_epoch(self, epoch: int, model: nn.Module, optimizer) -> dict:
        layers = self._prunable()
        mask = self._early_bird_mask(layers)
        row = {}
        if "mask" in self.previous:
            row["mask_distance"] = mask_distance(mask, self.previous["mask"])
            self.distances = [d for d in self.distances if d["epoch"] < epoch]
            self.distances.append({"epoch": epoch, **row})
        if epoch in self.epochs:
            self.records = [r for r in self.records if r["epoch"] < epoch]  # a redone epoch
            self.records.append(self._measure(epoch, layers))
        self.previous = {"mask": mask}
        if epoch + 1 in self.epochs:  # the next probe needs this epoch's weights
            self.previous["weights"] = {
                layer.name: layer.holder.weight.detach().cpu().clone() for layer in layers
            }
        self._write()
        return row

    def state_dict(self) -> dict:
        return {"records": self.records, "distances": self.distances, "previous": self.previous}

    def load_state_dict(self, state: dict) -> None:
        self.records = list(state.get("records", []))
        self.distances = list(state.get("distances", []))
        self.previous = dict(state.get("previous", {}))

    # -- measurements ---------------------------------------------------------------------------

    def _prunable(self) -> list:
        return [layer for layer in self.graph.layers.values() if layer.prunable]

    def _early_bird_mask(self, layers: list) -> torch.Tensor:
        """[S] True for the `mask_fraction` filters of smallest |BN scale| (or filter norm)."""
        values = []
        for layer in layers:
            bn = self.graph.gm.get_submodule(layer.bn) if layer.bn else None
            if bn is not None and getattr(bn, "weight", None) is not None:
                values.append(bn.weight.detach().abs().cpu())
            else:
                values.append(layer.holder.weight.detach().flatten(1).norm(dim=1).cpu())
        v = torch.cat(values)
        mask = torch.zeros(len(v), dtype=torch.bool)
        mask[v.argsort()[: round(self.mask_fraction * len(v))]] = True
        return mask

    def _measure(self, epoch: int, layers: list) -> dict:
        """The per-filter values and their correlations at `epoch`."""
        terms = flow_terms(
            self.graph.gm, self.batches, self.loss, self.n_samples, self.temperature, True
        )
        per_layer = {}
        for layer in layers:
            theta = layer.holder.weight.detach().flatten(1)
            g = terms.grad[f"{layer.theta_module}.weight"].flatten(1)
            hg = terms.hessian_grad[f"{layer.theta_module}.weight"].flatten(1)
            values = {
                "magnitude": (theta * theta).sum(1),
                "theta_g": (theta * g).sum(1),
                "theta_hg": (theta * hg).sum(1),
                "loss_preservation": (theta * g).abs().sum(1),
            }
            before = self.previous.get("weights", {}).get(layer.name)
            if before is not None:
                delta = theta.cpu() - before.flatten(1).to(theta.dtype)
                values["theta_dtheta"] = (theta.cpu() * delta).sum(1).abs()
            per_layer[layer.name] = {k: v.double().cpu().tolist() for k, v in values.items()}
        return {"epoch": epoch, "filters": per_layer, "correlation": _correlations(per_layer)}

    def _write(self) -> None:
        doc = {**self.config(), "probes": self.records, "mask_distances": self.distances}
        atomic_write_json(paths.flow(self.out), doc)


def _correlations(per_layer: dict) -> dict:
    """Pearson and Spearman across all filters: theta.Hg with theta.g, and |theta.Delta theta|
    with loss preservation (where the last epoch's weights were kept)."""

    def joined(key: str) -> torch.Tensor:
        return torch.tensor([v for layer in per_layer.values() for v in layer[key]])

    pairs = {"hg_vs_g": ("theta_hg", "theta_g")}
    if all("theta_dtheta" in layer for layer in per_layer.values()):
        pairs["dtheta_vs_loss_preservation"] = ("theta_dtheta", "loss_preservation")
    out = {}
    for name, (a, b) in pairs.items():
        x, y = joined(a), joined(b)
        out[name] = {"pearson": pearson(x, y), "spearman": spearman(x, y)}
    return out
