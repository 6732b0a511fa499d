"""The CNN families of timm and torchvision that SOSP is checked on, and timm's vision
transformer and MLP families (`TRANSFORMERS`), one small member each.

`FAMILIES` is the one table: per source ("timm", "torchvision") and family, the smallest member
(random weights), the input side it is checked at and any constructor keywords it needs.
`support(family)` traces that member and says whether its channels can be pruned: "prunes", or
the message of the operation that stops the analysis (`sosp.structures.analyze`). It is what
`sosp models --timm` / `--torchvision` print and what `tests/models/test_any_cnn.py` prunes.

timm and torchvision are imported only when a model is built.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from torch import nn

from sosp.errors import BadInput, UnknownName

SOURCES = ("timm", "torchvision")

# Every family's member runs on 3x32x32 (its deepest map 1x1) unless its entry names a larger
# side: the smallest input that keeps tracing, saliencies and surgery cheap.
DEFAULT_SIDE = 32

PRUNES = "prunes"


@dataclass(frozen=True)
class Family:
    """One family's member: `model` built by `source` with random weights, checked on inputs
    of shape (3, side, side); `kwargs` are extra constructor keywords."""

    source: str
    name: str
    model: str
    side: int = DEFAULT_SIDE
    kwargs: dict = field(default_factory=dict, hash=False)
    kind: str = "cnn"  # or "transformer" (vision transformers and MLP models)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (3, self.side, self.side)

    @property
    def core(self) -> bool:
        """Whether the family is a CNN one the support promise names (not `ALSO_TRIED`)."""
        return self.kind == "cnn" and (self.source, self.name) not in ALSO_TRIED


def _table(source: str, rows: dict[str, str | tuple]) -> dict[str, Family]:
    """{family: Family} from {family: model, or (model, side[, kwargs])}."""
    out = {}
    for name, row in rows.items():
        model, *rest = (row,) if isinstance(row, str) else row
        out[name] = Family(source, name, model, *rest)
    return out


FAMILIES: dict[str, dict[str, Family]] = {
    "timm": _table(
        "timm",
        {
            "resnet": "resnet10t",
            "resnext": "resnext26ts",
            "seresnet": "seresnet18",
            "seresnext": "seresnext26ts",
            "resnetv2": "resnetv2_18",
            "res2net": "res2net50_14w_8s",
            "efficientnet": "efficientnet_b0",
            "tinynet": "tinynet_e",
            "mobilenetv2": "mobilenetv2_035",
            "mobilenetv3": "mobilenetv3_small_050",
            "mixnet": "mixnet_s",
            "mnasnet": "mnasnet_050",
            "fbnet": "fbnetc_100",
            "spnasnet": "spnasnet_100",
            "hardcorenas": "hardcorenas_a",
            "lcnet": "lcnet_035",
            "ghostnet": "ghostnet_050",
            "rexnet": "rexnet_100",
            "regnetx": "regnetx_002",
            "regnety": "regnety_002",
            "densenet": "densenet121",
            "dla": "dla46_c",
            "dpn": "dpn48b",
            "hrnet": "hrnet_w18_small",
            "convnext": "convnext_atto",
            "repvgg": "repvgg_a0",
            "cspnet": "cspresnet50",
            "darknet": "darknet17",
            "tresnet": "tresnet_m",
            "xception": "xception41",
            "selecsls": "selecsls42",
            "gernet": "gernet_s",
            "vovnet": "ese_vovnet19b_slim_dw",
            # its stem and 3x3 reductions without padding need 75 px
            "inception_v3": ("inception_v3", 75),
            # ALSO_TRIED from here on
            "cs3darknet": "cs3darknet_focus_s",
            "mobilenetv4": "mobilenetv4_conv_small",
            "fasternet": "fasternet_t0",
            "repghostnet": "repghostnet_050",
            "mobileone": "mobileone_s0",
            "resnest": "resnest14d",
            "skresnet": "skresnet18",
            "ecaresnet": "ecaresnet26t",
            "nf_resnet": "nf_resnet26",
            "hgnetv2": "hgnetv2_b0",
            "vgg": "vgg11",
            "tf_efficientnet": "tf_efficientnet_b0",  # TensorFlow's "same" padding
        },
    ),
    "torchvision": _table(
        "torchvision",
        {
            "resnet": "resnet18",
            "resnext": "resnext50_32x4d",
            "wide_resnet": "wide_resnet50_2",
            "mobilenet_v2": "mobilenet_v2",
            "mobilenet_v3": "mobilenet_v3_small",
            "efficientnet": "efficientnet_b0",
            "regnet": "regnet_x_400mf",
            "convnext": "convnext_tiny",
            "densenet": "densenet121",
            "shufflenet_v2": "shufflenet_v2_x0_5",
            "mnasnet": "mnasnet0_5",
            "squeezenet": "squeezenet1_1",
            # without the auxiliary heads: eval mode never runs them, so a pruned copy (which
            # holds only the modules the forward pass uses) would drop their 4.3 M parameters
            # and count them as pruned; init_weights=True is torchvision's default, stated to
            # silence its warning that the default will change
            "googlenet": ("googlenet", DEFAULT_SIDE, {"aux_logits": False, "init_weights": True}),
        },
    ),
}


# timm's vision transformer and MLP families, one small member each at 32x32 where its
# constructor takes `img_size` (its patch grid then 2x2 to 8x8), else at the side given.
TRANSFORMERS: dict[str, Family] = {
    name: Family("timm", name, model, side, {"img_size": side} if sized else {}, "transformer")
    for name, (model, side, sized) in {
        "vit": ("vit_tiny_patch16_224", 32, True),
        "deit": ("deit_tiny_patch16_224", 32, True),
        "deit_distilled": ("deit_tiny_distilled_patch16_224", 32, True),
        "deit3": ("deit3_small_patch16_224", 32, True),
        "flexivit": ("flexivit_small", 32, True),
        "vit_registers": ("vit_small_patch14_reg4_dinov2", 28, True),
        "eva02": ("eva02_tiny_patch14_224", 28, True),
        "pit": ("pit_ti_224", 32, True),
        "cait": ("cait_xxs24_224", 32, True),
        "xcit": ("xcit_nano_12_p16_224", 32, True),
        "levit": ("levit_128s", 32, True),
        "mixer": ("mixer_s32_224", 32, True),
        "resmlp": ("resmlp_12_224", 32, True),
        "gmlp": ("gmlp_ti16_224", 32, True),
        "tnt": ("tnt_s_patch16_224", 32, True),
        "twins": ("twins_pcpvt_small", 32, True),
        "swin": ("swin_tiny_patch4_window7_224", 224, False),
        "visformer": ("visformer_tiny", 32, True),
        "coat": ("coat_tiny", 32, True),
        "poolformer": ("poolformer_s12", 64, False),
    }.items()
}


def transformer_families() -> list[Family]:
    """timm's vision transformer and MLP families (`TRANSFORMERS`), in table order."""
    return list(TRANSFORMERS.values())


# Families tried beyond the ones the support promise names (the core: at least 90% of those
# must prune; tests/models/test_any_cnn.py): more of timm's CNNs, pruning or not.
ALSO_TRIED = {
    ("timm", name)
    for name in (
        "cs3darknet", "mobilenetv4", "fasternet", "repghostnet", "mobileone", "resnest",
        "skresnet", "ecaresnet", "nf_resnet", "hgnetv2", "vgg", "tf_efficientnet",
    )
}  # fmt: skip


def families(source: str | None = None) -> list[Family]:
    """Every family of `source` ("timm", "torchvision"; None: both), in table order."""
    if source is not None and source not in FAMILIES:
        raise UnknownName(f"unknown model source {source!r}; choose one of {', '.join(SOURCES)}")
    return [f for s in ([source] if source else SOURCES) for f in FAMILIES[s].values()]


def family(source: str, name: str) -> Family:
    """The family `name` of `source`; an unknown name lists the known ones."""
    table = FAMILIES.get(source)
    if table is None or name not in table:
        known = ", ".join(table) if table else ", ".join(SOURCES)
        raise UnknownName(f"unknown {source} family {name!r}; known: {known}")
    return table[name]


def build(f: Family, num_classes: int = 10) -> nn.Module:
    """`f`'s model with random weights (nothing is downloaded) and `num_classes` outputs, in
    eval mode. Seed torch's generator first for the same weights every time."""
    if f.source == "timm":
        import timm

        model = timm.create_model(f.model, pretrained=False, num_classes=num_classes, **f.kwargs)
    else:
        import torchvision

        model = torchvision.models.get_model(
            f.model, weights=None, num_classes=num_classes, **f.kwargs
        )
    return model.eval()


def support(f: Family) -> str:
    """ "prunes" where `sosp.structures.analyze` finds `f`'s structures on its input shape,
    else the message of the operation that stops it (the `Unsupported` or `BadInput` error)."""
    return status(build(f), f.input_shape)[0]


def status(model: nn.Module, input_shape: tuple[int, ...]) -> tuple[str, int | None]:
    """("prunes", number of structures) where `model` can be analyzed on `input_shape`, else
    (the message of the error that stops the analysis, None)."""
    from sosp.structures import analyze  # torch.fx, only when a model is analyzed

    try:
        graph = analyze(model, input_shape)
    except BadInput as e:  # Unsupported is one
        return str(e), None
    return PRUNES, len(graph.structures)


_REPR = re.compile(
    r"<(?:built-in )?(?:function|method) ([\w.]+)(?: of [^>]*)?(?: at 0x[0-9a-f]+)?>"
)


def short(message: str, width: int = 160) -> str:
    """`message` cut to its first clause: Python object reprs as their name (no addresses), up
    to the first ". " or "; " outside parentheses (the advice after it is the same for every
    model), at most `width` characters."""
    message = _REPR.sub(r"\1", " ".join(message.split()))
    depth = 0
    for i, ch in enumerate(message):
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth = max(0, depth - 1)
        elif ch in ".;" and depth == 0 and message[i + 1 : i + 2] == " ":
            message = message[:i]
            break
    return message if len(message) <= width else message[: width - 3] + "..."
