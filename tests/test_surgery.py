"""Surgery: the physically pruned model computes what the soft-masked model computes, for
every zoo model and random masks; its counts are those of the report."""

import random

import pytest
import torch
from torch import nn

import sosp
from sosp import counting, data, models
from sosp.shortcuts import ChannelScatter, IndexAdd, ZeroPadShortcut
from sosp.structures import analyze, slice_params
from sosp.surgery import build_pruned, indices_from_mask, mask_from_indices, soft_masked
from tests.tiny_nets import TinyNet, randomized

# Small inputs keep the whole zoo fast on 2 cores: CIFAR models at 16x16 (the largest at 8x8),
# ImageNet models at 64x64.
SHAPES = {"cifar10": (3, 16, 16), "imagenet": (3, 64, 64)}
LARGE = {"wrn28_10", "resnet110", "resnet110_zeropad", "resnet32x4"}


def input_shape(name):
    return (3, 8, 8) if name in LARGE else SHAPES[models.spec(name).dataset]


def random_mask(graph, rng):
    """A random number (0 .. n-1) of random structures per layer."""
    pruned = []
    for idx in graph.layer_structures().values():
        pruned += rng.sample(idx, rng.randint(0, len(idx) - 1))
    return pruned


@pytest.mark.parametrize("coupling", ["filter", "stream"])
@pytest.mark.parametrize("name", models.names())
def test_pruned_network_equals_soft_mask(name, coupling):
    """Eval-mode outputs of the pruned network equal the soft-masked network's to 1e-9 in float64
    (float32 rounding through ResNet-110's 110 layers reached 4e-5 of outputs near 3), for
    per-filter structures (downsampling excluded) and for coupled residual streams (nothing
    excluded), whose pruned networks hold no scatter, and an index-add only where a zero-padding
    shortcut adds into the middle of a wider stream."""
    shape = input_shape(name)
    model = randomized(models.create(name, 10, shape[0], shape[1]), dtype=torch.float64)
    exclude = "resnet_downsample" if coupling == "filter" else None
    graph = analyze(model, shape, exclude=exclude, coupling=coupling)
    rng = random.Random(0)
    x = torch.randn(2, *shape, dtype=torch.float64)
    for _ in range(2):
        pruned = random_mask(graph, rng)
        small = build_pruned(graph, pruned).eval()
        with torch.no_grad():
            expected = soft_masked(model, graph, pruned).eval()(x)
            torch.testing.assert_close(small(x), expected, rtol=1e-9, atol=1e-9)
        assert counting.count_params(small) < counting.count_params(model)
        if coupling == "stream":
            assert not [m for m in small.modules() if isinstance(m, ChannelScatter)]
            pads = [m for m in model.modules() if isinstance(m, ZeroPadShortcut)]
            assert len([m for m in small.modules() if isinstance(m, IndexAdd)]) <= len(pads)


@pytest.mark.parametrize("name", ["densenet40", "mobilenet_v1", "resnet20", "vgg11", "wrn16_4"])
def test_zeroing_theta_s_is_the_removal_surgery_applies(name):
    """For single structures s, zeroing theta_s (the slices `graph.theta` assigns to s: the
    filter, its BN, and in DenseNet and MobileNet the consumer BN and depthwise slices of the
    channel) gives the function of the physically pruned network: the change the saliencies
    model is the change surgery applies."""
    shape = input_shape(name)
    model = randomized(models.create(name, 10, shape[0], shape[1]), dtype=torch.float64)
    graph = analyze(model, shape, exclude="resnet_downsample")
    x = torch.randn(2, *shape, dtype=torch.float64)
    rng = random.Random(0)
    for s in rng.sample(range(len(graph.structures)), 4):
        copy = randomized(models.create(name, 10, shape[0], shape[1]), dtype=torch.float64)
        copy.load_state_dict(model.state_dict())
        with torch.no_grad():
            for sl in graph.theta:
                for p in slice_params(copy.get_submodule(sl.module)):
                    for c, owner in zip(sl.channels, sl.structures, strict=True):
                        if owner == s:
                            p[c] = 0
            want = copy.eval()(x)
            got = build_pruned(graph, [s]).eval()(x)
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9, msg=graph.structures[s])


def test_soft_mask_equals_surgery_behind_a_batchnorm_without_affine():
    """A BN without gamma/beta holds no part of theta_s; the soft mask still makes the dead
    channel zero (zero running mean there), so it equals the pruned network."""
    model = randomized(TinyNet(affine=False))
    graph = analyze(model, (2, 4, 4))
    x = torch.randn(3, 2, 4, 4, dtype=torch.float64)
    for pruned in ([0], [0, 3], [1, 2, 6]):
        with torch.no_grad():
            want = soft_masked(model, graph, pruned).eval()(x)
            torch.testing.assert_close(build_pruned(graph, pruned).eval()(x), want)


def test_pruning_changes_the_function():
    """Guard against a vacuous equality: a pruned model differs from the dense one."""
    model = randomized(TinyNet())
    graph = analyze(model, (2, 4, 4))
    x = torch.randn(3, 2, 4, 4, dtype=torch.float64)
    assert not torch.allclose(build_pruned(graph, [0, 4]).eval()(x), model(x))


def test_residual_stream_survives_while_a_writer_lives():
    """TinyNet: pruning conv2's channel 0 keeps stream channel 0 (conv1 still writes it);
    pruning conv1's and conv2's channel 0 removes it from the stream and from bn3."""
    model = randomized(TinyNet())
    graph = analyze(model, (2, 4, 4))
    index = graph.structure_index()
    only_conv2 = build_pruned(graph, [index[("conv2", 0)]])
    assert only_conv2.conv2.out_channels == 2 and only_conv2.bn3.num_features == 5
    both = build_pruned(graph, [index[("conv2", 0)], index[("conv1", 0)]])
    assert both.conv3.in_channels == 2 and both.bn3.num_features == 4


def test_excluded_and_classifier_layers_are_not_structures():
    model = models.create("resnet20", 10)
    graph = analyze(model, (3, 32, 32), exclude="resnet_downsample")
    layers = {name for name, _ in graph.structures}
    assert "fc" not in layers and not any("shortcut" in n for n in layers)
    assert "layer2.0.conv1" in layers


def test_unsupported_operation_fails_loudly():
    """A channel-mixing op the analysis cannot prove safe names the node."""

    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(torch.sigmoid(self.conv(x)).mean((2, 3)))

    with pytest.raises(sosp.structures.Unsupported, match="sigmoid"):
        analyze(Scaled(), (3, 8, 8))


def test_mask_round_trip_and_fresh_model(tmp_path):
    """A mask saved to disk applies to a freshly created model of the same architecture and
    gives the counts of the pruned model."""
    model = models.create("resnet20", 10, 1, 8)
    ds = data.load("digits", "train")
    batches = [(ds.tensors[0][:64], ds.tensors[1][:64])]
    r = sosp.prune(model, "sosp_h", 0.4, batches, exclude="resnet_downsample", n_samples=64)
    sosp.save_mask(r.mask, tmp_path / "mask.json", model="resnet20")
    mask = sosp.load_mask(tmp_path / "mask.json")
    assert mask == r.mask
    fresh = models.create("resnet20", 10, 1, 8)
    small = sosp.apply_mask(fresh, mask, (1, 8, 8), exclude="resnet_downsample")
    assert counting.count(small, (1, 8, 8)).as_dict() == r.report["after"]
    graph = analyze(fresh, (1, 8, 8), exclude="resnet_downsample")
    assert mask_from_indices(graph, indices_from_mask(graph, mask)) == mask


def test_pruned_resnet_keeps_channels_last_through_every_conv():
    """A pruned ResNet-50 with per-filter structures (index-adds into the full residual stream)
    run on a channels_last input feeds every conv a channels_last input, so no conv copies its
    input to another layout, and computes what it computes on a contiguous input."""
    shape = (3, 32, 32)
    model = randomized(models.create("resnet50", 10, 3, 32), dtype=torch.float32).eval()
    graph = analyze(model, shape, exclude="resnet_downsample")
    small = build_pruned(graph, random_mask(graph, random.Random(0))).eval()
    assert [m for m in small.modules() if isinstance(m, IndexAdd)]
    small = small.to(memory_format=torch.channels_last)
    layouts = []
    for m in small.modules():
        if isinstance(m, nn.Conv2d):
            m.register_forward_pre_hook(
                lambda _, args: layouts.append(
                    args[0].shape[2:] == (1, 1)
                    or args[0].is_contiguous(memory_format=torch.channels_last)
                )
            )
    x = torch.randn(2, *shape)
    with torch.no_grad():
        out = small(x.to(memory_format=torch.channels_last))
        layouts_cl, layouts[:] = list(layouts), []
        torch.testing.assert_close(out, small(x), rtol=1e-4, atol=1e-4)
    assert layouts_cl and all(layouts_cl)


def _saved_and_loaded(net: nn.Module, path) -> nn.Module:
    torch.save(net, path)
    return torch.load(path, weights_only=False)


def test_pruned_network_saves_and_loads_with_torch(tmp_path):
    """A pruned network round-trips through torch.save(model) / torch.load as any PyTorch
    model does (its GraphModule re-traces its code on unpickling with the tracer's class
    called without arguments) and computes exactly what it computed: a resnet20 pruned by
    `sosp.prune` on digits-shaped data, and one whose random mask (nothing excluded) needs
    both an IndexAdd and a ChannelScatter."""
    torch.manual_seed(0)
    model = models.create("resnet20", 10, 1, 8).eval()
    x, y = torch.randn(16, 1, 8, 8), torch.randint(10, (16,))
    r = sosp.prune(model, "sosp_h", 0.5, [(x, y)], exclude="resnet_downsample", n_samples=16)
    graph = analyze(model, (1, 8, 8))
    scattered = build_pruned(graph, random_mask(graph, random.Random(0)))
    kinds = {type(m) for m in scattered.modules()}
    assert IndexAdd in kinds and ChannelScatter in kinds
    for i, net in enumerate([r.model.eval(), scattered.eval()]):
        back = _saved_and_loaded(net, tmp_path / f"{i}.pt").eval()
        assert [type(m) for m in back.modules()][1:] == [type(m) for m in net.modules()][1:]
        with torch.no_grad():
            assert torch.equal(back(x), net(x))
