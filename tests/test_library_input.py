"""`sosp.prune` on what a new user passes: every input it cannot use stops with one `BadInput`
line saying what is wrong and how to fix it, before any saliency is computed; inputs it can
use (a caller's grad mode, integer labels of any width, frozen layers it need not
differentiate) prune as the plain case does."""

import pytest
import torch
import torch.distributed as dist
from torch import nn

import sosp
from sosp import api, models
from sosp.errors import BadInput
from tests.tiny_nets import TinyNet, randomized

SHAPE, CLASSES = (2, 4, 4), 3  # TinyNet's input and outputs


def tiny() -> nn.Module:
    """TinyNet, the same weights at every call."""
    torch.manual_seed(0)
    return randomized(TinyNet(), dtype=torch.float32)


def tiny_batches(n=8, classes=CLASSES):
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(n, *SHAPE, generator=g), torch.randint(classes, (n,), generator=g)
    return [(x[: n // 2], y[: n // 2]), (x[n // 2 :], y[n // 2 :])]


def prune(model, data, method="sosp_h", **kw):
    return sosp.prune(model, method, 0.5, data, n_samples=8, **kw)


@pytest.fixture
def no_saliency(monkeypatch):
    """Fails the test if a method's saliency is computed: the refusal must come first."""

    def method(_name):
        def computed(*_a, **_k):
            raise AssertionError("the saliency was computed before the input was refused")

        return computed

    monkeypatch.setattr(api.methods, "get", method)


# -- frozen parameters ----------------------------------------------------------------------


@pytest.mark.parametrize("method", ["c_obd", "grad_norm"])
def test_a_frozen_model_is_refused_by_methods_that_differentiate(method):
    """requires_grad=False everywhere: methods that need the loss's gradient with respect to
    the pruned layers' parameters say so and how to make them trainable."""
    model = tiny().requires_grad_(False)
    with pytest.raises(BadInput, match=r"frozen model.*model\.requires_grad_\(True\)"):
        prune(model, tiny_batches(), method)


def test_frozen_pruned_layers_are_named_with_the_exclusion_that_allows_them():
    """Some pruned layers frozen: the message names their parameters and the `exclude` that
    leaves those layers unpruned."""
    model = tiny()
    model.conv2.requires_grad_(False)
    model.bn2.requires_grad_(False)
    with pytest.raises(BadInput, match=r"conv2\.weight, bn2\.weight.*exclude=\['conv2'\]"):
        prune(model, tiny_batches(), "c_obd")


@pytest.mark.parametrize("method", ["sosp_h", "c_obd", "loss_preservation"])
def test_frozen_layers_that_are_excluded_prune_as_trainable_ones(method):
    """A frozen backbone whose layers are excluded is supported: the saliencies need
    gradients only of the structures' parameters; frozen parameters elsewhere are constants.
    Same mask and scores as the trainable model."""
    kw = {"exclude": ["conv1", "conv2"]}
    frozen = tiny()
    for name in ("conv1", "bn1", "conv2", "bn2"):
        frozen.get_submodule(name).requires_grad_(False)
    got, want = (
        prune(frozen, tiny_batches(), method, **kw),
        prune(tiny(), tiny_batches(), method, **kw),
    )
    assert got.mask == want.mask and got.scores == want.scores


@pytest.mark.parametrize("method", ["sosp_i", "sosp_h", "first_order", "magnitude"])
def test_methods_without_parameter_gradients_prune_a_frozen_model(method):
    """SOSP-I and SOSP-H differentiate with respect to their gates, magnitude not at all: a
    frozen model prunes as the trainable one."""
    got = prune(tiny().requires_grad_(False), tiny_batches(), method)
    want = prune(tiny(), tiny_batches(), method)
    assert got.mask == want.mask and got.scores == want.scores


# -- what `data` is -------------------------------------------------------------------------


def test_dict_batches_name_their_keys_and_the_pairs_to_pass(no_saliency):
    """HF-style dict batches: the message names the keys and shows the generator of pairs."""
    data = [{"pixel_values": x, "labels": y} for x, y in tiny_batches()]
    fix = r"\(\(b\['pixel_values'\], b\['labels'\]\) for b in loader\)"
    with pytest.raises(
        BadInput, match=r"batch 0 is a dict.*\(inputs \[B, \.\.\.\], labels \[B\]\).*" + fix
    ):
        prune(tiny(), data)


def test_a_dataset_is_refused_with_the_dataloader_to_pass(no_saliency):
    """A map-style dataset yields single samples: wrap it in a DataLoader."""
    dataset = torch.utils.data.TensorDataset(*tiny_batches()[0])
    with pytest.raises(BadInput, match=r"dataset \(TensorDataset\).*DataLoader\(dataset"):
        prune(tiny(), dataset)


@pytest.mark.parametrize("one", ["tensor", "pair"])
def test_a_tensor_or_one_batch_is_refused_with_the_list_to_pass(one, no_saliency):
    """A bare tensor, or one (x, y) batch, passed as data: pass [(x, y)]."""
    x, y = tiny_batches()[0]
    with pytest.raises(BadInput, match=r"data=\[\(x, y\)\]"):
        prune(tiny(), x if one == "tensor" else (x, y))


@pytest.mark.parametrize(
    "batch, match",
    [
        ((torch.zeros(*SHAPE), 1), r"one sample, not a batch.*DataLoader"),
        ((torch.zeros(*SHAPE), torch.tensor(1)), r"one sample, not a batch"),
        ((torch.zeros(4, *SHAPE), torch.zeros(4, dtype=torch.long), 0), r"is a 3-tuple"),
        ((torch.zeros(4, *SHAPE).numpy(), torch.zeros(4).numpy()), r"torch\.as_tensor"),
        ((torch.zeros(4, *SHAPE), torch.zeros(2, dtype=torch.long)), r"4 inputs but 2 labels"),
        ((torch.zeros(4, *SHAPE, device="meta"), torch.zeros(4)), r"meta device"),
    ],
    ids=["sample", "sample-tensor", "triple", "numpy", "lengths", "meta"],
)
def test_batches_that_are_not_input_label_pairs_are_refused(batch, match, no_saliency):
    """Each batch is a pair of tensors of one length with values: the message says which
    batch breaks that and how."""
    with pytest.raises(BadInput, match=match):
        prune(tiny(), [batch])


# -- labels ---------------------------------------------------------------------------------


@pytest.mark.parametrize("label", [CLASSES, -1])
@pytest.mark.parametrize("method, loss", [("sosp_h", "cross_entropy"), ("sosp_i", "squared")])
def test_labels_outside_the_classes_are_refused(label, method, loss, no_saliency):
    """A label >= the model's outputs or negative: named, with the fix (num_classes)."""
    data = tiny_batches()
    data[1][1][2] = label
    with pytest.raises(BadInput, match=rf"batch 1 has label {label}, outside.*num_classes"):
        prune(tiny(), data, method, loss=loss)


@pytest.mark.parametrize(
    "labels, match",
    [
        (lambda y: y.float(), r"float labels of shape \(4,\).*y\.long\(\)"),
        (lambda y: y[:, None], r"labels of shape \(4, 1\)"),
    ],
    ids=["float-indices", "column"],
)
def test_labels_of_the_wrong_shape_are_refused(labels, match, no_saliency):
    """Labels are class indices [B] or float targets [B, D]."""
    data = [(x, labels(y)) for x, y in tiny_batches()]
    with pytest.raises(BadInput, match=match):
        prune(tiny(), data)


def test_integer_labels_of_any_width_prune_as_int64_labels():
    """int32 or uint8 class indices (a NumPy default, a byte label file) are class indices:
    the same mask and scores as int64 for SOSP-I, whose targets are one-hot."""
    want = prune(tiny(), tiny_batches(), "sosp_i")
    for dtype in (torch.int32, torch.uint8):
        got = prune(tiny(), [(x, y.to(dtype)) for x, y in tiny_batches()], "sosp_i")
        assert got.mask == want.mask and got.scores == want.scores


def test_one_hot_float_targets_prune_as_class_indices():
    """Float one-hot targets [B, D] are the class indices' cross-entropy."""
    want = prune(tiny(), tiny_batches())
    one_hot = [(x, nn.functional.one_hot(y, CLASSES).float()) for x, y in tiny_batches()]
    got = prune(tiny(), one_hot)
    assert got.mask == want.mask
    assert got.scores == pytest.approx(want.scores, rel=1e-5, abs=1e-9)


# -- the model ------------------------------------------------------------------------------


def test_data_parallel_is_refused_with_model_module(no_saliency):
    """nn.DataParallel: pass model.module (by prune and by apply_mask)."""
    with pytest.raises(BadInput, match=r"wrapped in DataParallel.*model\.module"):
        prune(nn.DataParallel(tiny()), tiny_batches())
    with pytest.raises(BadInput, match=r"model\.module"):
        sosp.apply_mask(nn.DataParallel(tiny()), {}, SHAPE)


def test_distributed_data_parallel_is_refused_with_model_module(tmp_path, no_saliency):
    """DistributedDataParallel (a one-process gloo group): pass model.module."""
    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        wrapped = nn.parallel.DistributedDataParallel(tiny())
        with pytest.raises(BadInput, match=r"wrapped in DistributedDataParallel.*model\.module"):
            prune(wrapped, tiny_batches())
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize(
    "model, match",
    [
        ("resnet20", r"not str: create it first, sosp\.models\.create\('resnet20'"),
        (nn.Sequential(nn.ReLU()), r"Sequential has no parameters"),
        (TinyNet().to("meta"), r"meta device.*to_empty"),
    ],
    ids=["name", "no-parameters", "meta"],
)
def test_models_without_values_to_prune_are_refused(model, match, no_saliency):
    """A model name, a parameterless module, parameters on the meta device."""
    with pytest.raises(BadInput, match=match):
        prune(model, tiny_batches())


def test_a_model_made_in_inference_mode_is_refused(no_saliency):
    """Parameters made under torch.inference_mode cannot be differentiated: say where to
    create the model."""
    with torch.inference_mode():
        model = tiny()
    with pytest.raises(BadInput, match=r"created under torch\.inference_mode"):
        prune(model, tiny_batches())


class _Outputs(nn.Module):
    """TinyNet returning its logits wrapped as `wrap(logits)`."""

    def __init__(self, wrap):
        super().__init__()
        self.net, self.wrap = tiny(), wrap

    def forward(self, x):
        return self.wrap(self.net(x))


def _conv_map() -> nn.Module:
    """A fully convolutional net: logits per pixel [B, 3, 4, 4]."""
    return nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, CLASSES, 1))


@pytest.mark.parametrize(
    "model, what",
    [
        (lambda: _Outputs(lambda out: (out, out)), "_Outputs returns a tuple"),
        (
            lambda: _Outputs(lambda out: {"logits": out}),
            r"_Outputs returns a dict \(keys 'logits'\)",
        ),
        (_conv_map, r"Sequential returns a tensor of shape \(1, 3, 4, 4\) for one sample"),
    ],
    ids=["tuple", "dict", "4d"],
)
def test_a_model_not_returning_logits_is_refused(model, what, no_saliency):
    """The output must be logits [batch, classes]: say what it is and how to wrap it."""
    with pytest.raises(BadInput, match=rf"{what}; .*out\['logits'\]"):
        prune(model(), tiny_batches())


def test_a_model_for_other_inputs_is_refused_without_printing_a_traceback(capsys):
    """A model built for 3 input channels on 1-channel data: one BadInput line, and nothing
    printed on stderr (fx's shape propagation prints the traceback of the error it wraps)."""
    model = models.create("resnet20", 10, 3, 8)
    data = [(torch.randn(4, 1, 8, 8), torch.randint(10, (4,)))]
    with pytest.raises(BadInput, match=r"does not run on inputs of shape \(1, 8, 8\)"):
        prune(model, data)
    assert capsys.readouterr().err == ""


# -- the caller's grad mode, ratios ---------------------------------------------------------


@pytest.mark.parametrize("mode", [torch.no_grad, torch.inference_mode])
@pytest.mark.parametrize("method", ["sosp_h", "sosp_i"])
def test_pruning_inside_no_grad_or_inference_mode_prunes_as_outside(mode, method):
    """A caller inside torch.no_grad() or torch.inference_mode() (batches made there too)
    gets what a call outside gives: the saliencies run with gradients on."""
    want = prune(tiny(), tiny_batches(), method)
    model = tiny()
    with mode():
        got = prune(model, tiny_batches(), method)
    assert got.mask == want.mask and got.scores == want.scores


@pytest.mark.parametrize("ratio", [0.0, -0.5, 1.5, float("nan")])
def test_ratios_outside_0_1_are_refused(ratio, no_saliency):
    """From the library, not only the command line."""
    with pytest.raises(BadInput, match=r"ratio must lie in \(0, 1\)"):
        sosp.prune(tiny(), "sosp_h", ratio, tiny_batches())


def test_no_ratio_is_refused(no_saliency):
    """prune_ratios with an empty list returned an empty list; now it says to pass one."""
    with pytest.raises(BadInput, match=r"at least one ratio"):
        sosp.prune_ratios(tiny(), "sosp_h", [], tiny_batches())


def test_nan_inputs_stop_at_the_saliencies():
    """Non-finite data gives NaN saliencies: refused with the data named, from the library."""
    data = [(x * float("nan"), y) for x, y in tiny_batches()]
    with pytest.raises(BadInput, match=r"NaN or infinite saliencies.*data"):
        prune(tiny(), data)
