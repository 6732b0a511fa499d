"""The model zoo: the published/pinned sizes, shapes on every dataset, and MAC counts that agree
with an independent counter (ptflops' ATen backend)."""

import pytest
import torch
from ptflops import get_model_complexity_info
from torch import nn

from sosp import counting, data, models
from sosp.shortcuts import ChannelScatter, IndexAdd, layout_of

# (model, dataset) -> (params, MACs or None): the SOSP paper's 855 x 10^3 for its ResNet-56,
# the zero-padding ResNet-56 of most pruning papers, torchvision's documented counts.
PINNED = {
    ("resnet56", "cifar10"): (855_770, 125_747_840),
    ("resnet56_zeropad", "cifar10"): (853_018, 125_485_696),
    ("resnet18", "imagenet"): (11_689_512, 1_814_073_344),
    ("vgg19", "cifar10"): (20_035_018, None),
    ("resnet32x4", "cifar10"): (7_427_914, None),
    ("densenet40", "cifar10"): (1_059_298, None),
    ("resnet50", "imagenet"): (25_557_032, 4_089_184_256),
}


def build(name: str, dataset: str) -> nn.Module:
    meta = data.info(dataset)
    return models.create(name, meta.num_classes, meta.in_channels, meta.image_size)


@pytest.mark.parametrize(("name", "dataset"), list(PINNED))
def test_pinned_counts(name, dataset):
    """Params and MACs equal the numbers the papers and torchvision document."""
    params, macs = PINNED[(name, dataset)]
    c = counting.count(build(name, dataset), data.info(dataset).input_shape)
    assert c.params == params
    if macs is not None:
        assert c.macs == macs


def test_zeropad_differs_only_by_projections():
    """The projection variant adds exactly the two 1x1 conv + BN shortcuts of ResNet-56."""
    diff = counting.count_params(build("resnet56", "cifar10")) - counting.count_params(
        build("resnet56_zeropad", "cifar10")
    )
    assert diff == (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)


def ptflops_macs(model: nn.Module, shape: tuple[int, ...]) -> int:
    """ptflops (ATen backend: every convolution and matrix product the forward pass runs)
    minus the bias additions it includes (one per output element of a Conv2d or Linear with a
    bias) and minus the placement GEMMs of a pruned network's sums on a channels_last CPU
    tensor (`IndexAdd`/`ChannelScatter`: branch elements x stream channels, plus the stream's
    elements that ptflops counts for addmm's added matrix: a copy done as a product), i.e.
    conv + linear MACs by an independent implementation; timm's fused attention runs in its
    explicit form there (QK^T and AV as matrix products ptflops sees)."""
    extra = 0

    def count_bias(_m: nn.Module, _inputs, out: torch.Tensor) -> None:
        nonlocal extra
        extra += out[0].numel()  # ptflops runs one sample

    def count_placement(m: nn.Module, inputs, _out) -> None:
        nonlocal extra
        stream, branch = inputs[0], inputs[-1]
        if stream.device.type == "cpu" and layout_of(stream) == torch.channels_last:
            extra += branch.numel() * m.size + (stream.numel() if isinstance(m, IndexAdd) else 0)

    fused = [m for m in model.modules() if getattr(m, "fused_attn", False)]
    for m in fused:  # ptflops does not count fused attention; timm's explicit form it does
        m.fused_attn = False
    biased = [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    handles = [m.register_forward_hook(count_bias) for m in biased if m.bias is not None]
    sums = [m for m in model.modules() if isinstance(m, IndexAdd | ChannelScatter)]
    handles += [m.register_forward_hook(count_placement) for m in sums]
    try:
        macs, _ = get_model_complexity_info(
            model,
            shape,
            as_strings=False,
            backend="aten",
            print_per_layer_stat=False,
            verbose=False,
        )
    finally:
        for h in handles:
            h.remove()
        for m in fused:
            m.fused_attn = True
    assert macs is not None, "ptflops could not run the model (it printed why)"
    return macs - extra


@pytest.mark.parametrize("name", models.names())
def test_macs_match_independent_counter(name):
    """Our MAC count equals ptflops' on every zoo model at its native resolution (the small
    ViT's attention included, counted by ptflops in timm's explicit form)."""
    dataset = models.spec(name).dataset
    model = build(name, dataset)
    shape = data.info(dataset).input_shape
    assert counting.count_macs(model, shape) == ptflops_macs(model, shape)


@pytest.mark.parametrize("name", [n for n in models.names() if models.spec(n).dataset == "cifar10"])
@pytest.mark.parametrize("dataset", ["digits", "cifar100"])
def test_cifar_models_accept_their_datasets(name, dataset):
    """Every CIFAR model runs on 1-channel 8x8 digits and on CIFAR-100, emitting one logit per
    class."""
    meta = data.info(dataset)
    model = build(name, dataset).eval()
    with torch.no_grad():
        out = model(torch.randn(2, *meta.input_shape))
    assert out.shape == (2, meta.num_classes)


def test_timm_model_by_name():
    """timm models are created offline by name and counted like any other model."""
    model = models.create("timm/resnet10t", num_classes=10, in_channels=3)
    shape = (3, 64, 64)
    assert counting.count_macs(model, shape) == ptflops_macs(model, shape)
    assert model(torch.randn(1, *shape)).shape == (1, 10)


def test_unknown_model_names_the_alternatives():
    """An unknown name raises an error that lists the known models."""
    with pytest.raises(KeyError, match="resnet56"):
        models.create("resnet57", 10)
    with pytest.raises(KeyError, match="timm.list_models"):
        models.create("timm/not_a_model", 10)
