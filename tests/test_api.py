"""sosp.prune end to end: results, budgets, options and the errors a user can trigger."""

import pytest
import torch

import sosp
from sosp import counting, methods, models
from sosp.errors import BadInput, UnknownName
from sosp.structures import analyze
from sosp.surgery import indices_from_mask, soft_masked
from tests.tiny_nets import TinyNet, randomized

CIFAR_ZOO = [n for n in models.names() if models.spec(n).dataset == "cifar10"]


def batches(n=16, shape=(1, 8, 8), classes=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(n, *shape, generator=g), torch.randint(classes, (n,), generator=g)
    return [(x[:8], y[:8]), (x[8:], y[8:])]


# diagonal and first_order are flags of sosp_i and sosp_h (the same code with terms dropped), the
# gradient-flow presets are grad_norm's options and loss preservation's formula on the same
# per-filter path, and resnet110(_zeropad) are deeper resnet56(_zeropad) (the same blocks):
# checking them on every model would add minutes of CI and no code path.
FLAG_VARIANTS = (
    "diagonal", "first_order", "biased_loss_preservation", "grad_norm_untempered",
    "grad_norm_preservation",
)  # fmt: skip
# Deeper or wider copies of an architecture another zoo model has: SOSP-H only (CI time).
DEEPER_COPIES = ("resnet110", "resnet110_zeropad", "vgg13", "vgg16", "wrn28_10")
MODEL_METHOD = [
    (name, method)
    for name in CIFAR_ZOO
    for method in methods.names()
    if (method not in FLAG_VARIANTS or name in ("resnet20", "vgg11_quarter"))
    and (name not in DEEPER_COPIES or method == "sosp_h")
    and (name, method) != ("vit_mini", "slimming")  # no BatchNorm: tests/models/test_vit.py
]


@pytest.mark.parametrize("name, method", MODEL_METHOD)
def test_every_cifar_model_prunes(name, method):
    """Every method prunes every CIFAR zoo model (1x8x8 inputs, N'=16); the report's counts
    are the pruned model's, the mask holds the pruned structures' channels (one each, a ViT
    head's q, k and v channels together), and the model passed in is unchanged. (The flag
    variants run on two models, the deeper copies with one method: see MODEL_METHOD.)"""
    model = models.create(name, 10, 1, 8)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    r = sosp.prune(model, method, 0.3, batches(), exclude="resnet_downsample", n_samples=16)
    assert r.report["after"] == counting.count(r.model, (1, 8, 8)).as_dict()
    assert r.report["after"]["params"] < r.report["before"]["params"]
    graph = analyze(model, (1, 8, 8), exclude="resnet_downsample")
    index = graph.structure_index()
    assert len(r.order) == r.report["pruned_structures"]
    assert sum(map(len, r.mask.values())) == sum(len(graph.members[index[s]]) for s in r.order)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("budget", ["params", "macs"])
def test_param_and_mac_budgets_are_met(budget):
    model = models.create("resnet20", 10, 1, 8)
    r = sosp.prune(model, "sosp_h", 0.4, batches(), budget=budget, n_samples=16)
    assert r.report[f"{budget}_removed"] >= 0.4
    assert r.report[f"{budget}_removed"] < 0.45  # shortest prefix, not far past the target


def test_max_layer_fraction_and_local_scope():
    model = models.create("vgg11", 10, 1, 8)
    r = sosp.prune(model, "sosp_h", 0.5, batches(), max_layer_fraction=0.6, n_samples=16)
    for name, channels in r.mask.items():
        assert len(channels) <= 0.6 * model.get_submodule(name).out_channels
    r = sosp.prune(model, "sosp_i", 0.5, batches(), scope="local", n_samples=16)
    for name, channels in r.mask.items():
        assert len(channels) == model.get_submodule(name).out_channels // 2


def test_kernel_scaling_divides_saliency_by_kernel_side():
    """SOSP*: the order is that of saliency / kernel side (3 for TinyNet's 3x3 convolutions,
    1 for its 1x1 convolution and linear layer), not / kernel area."""
    model = randomized(TinyNet(), dtype=torch.float32)
    data = [(torch.randn(8, 2, 4, 4), torch.randint(3, (8,)))]
    plain = sosp.prune(model, "sosp_h", 0.25, data, n_samples=8)
    scaled = sosp.prune(model, "sosp_h", 0.25, data, n_samples=8, kernel_scaling=True)
    k = {"conv1": 3, "conv2": 3, "conv3": 1, "hidden": 1}
    expected = sorted(plain.scores, key=lambda s: plain.scores[s] / k[s[0]])[:3]
    assert scaled.order == expected  # 3 of 12; no layer reaches its cap this early
    assert scaled.order != plain.order


def test_kernel_scaling_on_resnet50_divides_by_1_3_and_7():
    """On torchvision's ResNet-50 the scores of 1x1, 3x3 and the 7x7 stem's structures are
    divided by 1, 3 and 7."""
    model = models.create("resnet50", 10, 3, 32)
    data = [(torch.randn(2, 3, 32, 32), torch.randint(10, (2,)))]
    kw = {"n_samples": 2, "exclude": "resnet_downsample"}
    plain = sosp.prune(model, "sosp_h", 0.1, data, **kw)
    scaled = sosp.prune(model, "sosp_h", 0.1, data, kernel_scaling=True, **kw)
    side = {"conv1": 7, "layer1.0.conv1": 1, "layer1.0.conv2": 3, "layer4.2.conv3": 1}
    for layer, k in side.items():
        for s in [(layer, 0), (layer, 5)]:
            assert scaled.scores[s] == pytest.approx(plain.scores[s] / k, rel=1e-12), s
    sides = {model.get_submodule(name).kernel_size[0] for name, _ in plain.scores}
    assert sides == {1, 3, 7}


def test_scores_and_order_agree_for_sosp_h():
    model = models.create("resnet20", 10, 1, 8)
    r = sosp.prune(model, "sosp_h", 0.3, batches(), n_samples=16)
    scores = [r.scores[s] for s in r.order]
    assert scores == sorted(scores)
    assert max(scores) <= min(v for s, v in r.scores.items() if s not in set(r.order))


def test_errors_name_the_problem():
    model = models.create("resnet20", 10, 1, 8)
    with pytest.raises(UnknownName, match="known methods"):
        sosp.prune(model, "sosp_x", 0.5, batches())
    with pytest.raises(BadInput, match="takes no option"):
        sosp.prune(model, "sosp_h", 0.5, batches(), diagonal=True)
    with pytest.raises(BadInput, match="ratio"):
        sosp.prune(model, "sosp_h", 1.0, batches())
    with pytest.raises(BadInput, match="no data"):
        sosp.prune(model, "sosp_h", 0.5, [])
    with torch.no_grad():
        model.conv1.weight[0, 0, 0, 0] = float("nan")
    with pytest.raises(BadInput, match="NaN"):
        sosp.prune(model, "sosp_i", 0.5, batches(), n_samples=16)


@pytest.mark.parametrize("coupling", ["filter", "stream"])
def test_round_to_keeps_multiples_of_k_and_meets_the_budget(coupling):
    """With round_to=4 every pruned conv of the built network keeps a multiple of 4 channels
    (or all), the MAC budget is met, the report's channel counts are those of the built
    network, and it computes what the soft-masked network does."""
    model = randomized(models.create("resnet20", 10, 1, 8), dtype=torch.float64)
    data = [(x.double(), y) for x, y in batches()]
    r = sosp.prune(
        model, "sosp_h", 0.4, data, n_samples=16, budget="macs", round_to=4, coupling=coupling
    )
    assert 0.4 <= r.report["macs_removed"] < 0.5
    for name, (kept, total) in r.report["channels"].items():
        assert r.model.get_submodule(name).out_channels == kept
        assert kept == total or kept % 4 == 0, (name, kept, total)
    assert any(kept < total for kept, total in r.report["channels"].values())
    soft = soft_masked(
        model, analyze(model, (1, 8, 8)), indices_from_mask(analyze(model, (1, 8, 8)), r.mask)
    )
    x = torch.randn(3, 1, 8, 8, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(r.model.eval()(x), soft.eval()(x), rtol=1e-5, atol=1e-5)


def test_stream_coupling_shrinks_the_stream_without_scatters():
    """coupling="stream" on ResNet-20 without exclusions: the residual streams get narrower,
    the built network holds no scatter or index-add, and every mask names whole stream
    channels (re-reading it under stream coupling accepts it)."""
    model = models.create("resnet20", 10, 1, 8)
    r = sosp.prune(model, "sosp_h", 0.5, batches(), n_samples=16, coupling="stream")
    assert r.model.get_submodule("layer3.2.conv2").out_channels < 64
    assert not [m for m in r.model.modules() if type(m).__name__ in ("IndexAdd", "ChannelScatter")]
    graph = analyze(model, (1, 8, 8), coupling="stream")
    assert len(indices_from_mask(graph, r.mask)) == r.report["pruned_structures"]
    coupled = next(i for i, members in enumerate(graph.members) if len(members) > 1)
    name, c = graph.member_channels(coupled)[0]
    with pytest.raises(BadInput, match="coupled structure"):
        indices_from_mask(graph, {name: [c]})


def test_label_sampling_option():
    model = models.create("resnet20", 10, 1, 8)
    r = sosp.prune(model, "sosp_i", 0.3, batches(), n_samples=16, label_samples=2)
    assert r.report["options"] == {"label_samples": 2}


REPORT_KEYS = [
    "method", "options", "budget", "scope", "max_layer_fraction", "kernel_scaling",
    "coupling", "round_to", "latency_table", "shuffle_within_layers", "recalibrate_bn",
    "bn_recalibration", "loss", "exclude", "n_samples", "structures", "ratio",
    "pruned_structures", "before", "after", "params_removed", "macs_removed", "unshuffled",
    "latency", "channels",
    "seconds_saliency", "seconds", "seconds_by_step",
]  # fmt: skip


def test_report_keys_are_stable():
    """The report's keys, in order: report.json and the workflow's tables are built on them."""
    model = models.create("resnet20", 10, 1, 8)
    r = sosp.prune(model, "magnitude", 0.3, batches(), exclude="resnet_downsample", n_samples=16)
    assert list(r.report) == REPORT_KEYS
    assert r.report["exclude"] == ["resnet_downsample"] and r.report["n_samples"] == 16


def test_settings_are_checked_before_any_work():
    """A bad setting is refused with the settings' message, whichever way it is passed."""
    model = models.create("resnet20", 10, 1, 8)
    with pytest.raises(BadInput, match="budget must be one of structures, params, macs"):
        sosp.prune(model, "sosp_h", 0.5, batches(), budget="flops")
    with pytest.raises(BadInput, match="loss must be one of"):
        sosp.prune_ratios(model, "sosp_h", [0.5], batches(), loss="mse")
    with pytest.raises(BadInput, match="n_samples must be at least 1"):
        sosp.prune(model, "sosp_h", 0.5, batches(), n_samples=0)


def test_prune_with_settings_equals_prune_with_keywords():
    """`prune_with(settings)` is what the keyword interface builds: same mask and report."""
    from sosp.api import prune_with

    model = models.create("resnet20", 10, 1, 8)
    kw = {"n_samples": 16, "scope": "local", "exclude": "resnet_downsample"}
    by_keywords = sosp.prune(model, "sosp_i", 0.4, batches(), label_samples=2, **kw)
    (by_settings,) = prune_with(
        model, "sosp_i", [0.4], batches(), sosp.PruneSettings(**kw), {"label_samples": 2}
    )
    assert by_settings.mask == by_keywords.mask
    drop = ("seconds", "seconds_saliency", "seconds_by_step")
    assert {k: v for k, v in by_settings.report.items() if k not in drop} == {
        k: v for k, v in by_keywords.report.items() if k not in drop
    }


def test_shuffle_within_layers_keeps_the_architecture_and_draws_the_channels():
    """shuffle_within_layers on ResNet-20 (SOSP-H at 0.3 and 0.5): every layer keeps its
    pruned count, the pruned network its params and MACs (the report's `unshuffled` counts
    are the method's mask's), the channels change, the same seed gives the same masks, and a
    larger ratio's shuffled mask holds the smaller's."""
    model = models.create("resnet20", 10, in_channels=1, image_size=8)
    kw = {"n_samples": 16, "seed": 3}
    method = sosp.prune_ratios(model, "sosp_h", [0.3, 0.5], batches(), **kw)
    runs = [
        sosp.prune_ratios(model, "sosp_h", [0.3, 0.5], batches(), shuffle_within_layers=True, **kw)
        for _ in range(2)
    ]
    for own, mixed, again in zip(method, *runs, strict=True):
        assert mixed.report["shuffle_within_layers"] and not own.report["shuffle_within_layers"]
        assert mixed.report["channels"] == own.report["channels"]
        assert mixed.report["after"] == own.report["after"]
        assert mixed.report["unshuffled"] == {
            k: own.report[k] for k in ("params_removed", "macs_removed")
        }
        assert mixed.mask != own.mask and mixed.mask == again.mask
    small, large = runs[0]
    assert all(set(v) <= set(large.mask[k]) for k, v in small.mask.items())


class _Pieces(torch.nn.Module):
    """conv1 (2 -> 8) split into two pieces of 4, each read by its own conv (as in a Res2Net
    block), concatenated, pooled, classified. Piece a's filters are tiny, so magnitude ranks
    all four of them first."""

    def __init__(self) -> None:
        super().__init__()
        nn = torch.nn
        self.conv1 = nn.Conv2d(2, 8, 3, padding=1)
        self.conv_a, self.conv_b = nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(8, 3)
        with torch.no_grad():
            self.conv1.weight[:4] *= 1e-3

    def forward(self, x):
        a, b = torch.split(self.conv1(x), 4, dim=1)
        y = torch.cat([self.conv_a(torch.relu(a)), self.conv_b(torch.relu(b))], 1)
        return self.fc(y.mean((2, 3)))


def test_every_piece_of_a_split_keeps_a_channel():
    """The selection groups are each layer's structures split where other layers read
    different parts (conv1's two pieces); every group keeps one: magnitude at 5 of 16
    structures, which would prune all of piece a and leave conv_a no input, prunes 3 of it and
    conv_a reads the one left."""
    from sosp.structures import analyze

    torch.manual_seed(0)
    model = _Pieces()
    graph = analyze(model, (2, 4, 4))
    assert graph.selection_groups() == [
        [0, 1, 2, 3],
        [4, 5, 6, 7],
        [8, 9, 10, 11],
        [12, 13, 14, 15],
    ]
    batch = [(torch.randn(6, 2, 4, 4), torch.randint(3, (6,)))]
    r = sosp.prune(model, "magnitude", 5 / 16, batch, n_samples=6)
    assert r.model.conv_a.in_channels == 1
