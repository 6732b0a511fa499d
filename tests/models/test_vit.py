"""The zoo's small vision transformer (`vit_mini`, timm's VisionTransformer on digits' 8x8 with
patches of 2 pixels): every method prunes it into a network that computes what its soft mask
does, in float64; slimming, which reads BatchNorm scales, says it has none. torchvision's
VisionTransformer (nn.MultiheadAttention) prunes into its soft mask too."""

import pytest
import torch

import sosp
from sosp import methods, models
from sosp.errors import BadInput
from sosp.structures import analyze
from sosp.surgery import indices_from_mask, soft_masked


@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(0)
    model = models.create("vit_mini", 10, in_channels=1, image_size=8).double().eval()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(16, 1, 8, 8, generator=g, dtype=torch.float64)
    return model, analyze(model, (1, 8, 8)), x, torch.randint(10, (16,), generator=g)


def test_structures_are_patch_filters_heads_attention_rows_and_mlp_units(vit):
    """64 patch-embedding filters, then per block 2 heads (q, k and v rows of qkv each), 64
    attention output rows, 128 MLP units and 64 MLP output rows: 64 + 4 * 258 structures."""
    _, graph, _, _ = vit
    assert len(graph.structures) == 64 + 4 * 258
    assert [name for name, c in graph.structures if c == 0][:5] == [
        "patch_embed.proj", "blocks.0.attn.qkv", "blocks.0.attn.proj", "blocks.0.mlp.fc1",
        "blocks.0.mlp.fc2",
    ]  # fmt: skip
    assert [s for s in graph.structures if s[0] == "blocks.0.attn.qkv"] == [
        ("blocks.0.attn.qkv", 0), ("blocks.0.attn.qkv", 32),
    ]  # fmt: skip


@pytest.mark.parametrize("method", [m for m in methods.names() if m != "slimming"])
def test_every_method_prunes_it_into_its_soft_mask(vit, method):
    model, graph, x, y = vit
    r = sosp.prune(model, method, 0.3, [(x, y)], n_samples=16)
    assert r.report["after"]["params"] < r.report["before"]["params"]
    soft = soft_masked(model, graph, indices_from_mask(graph, r.mask)).double().eval()
    with torch.no_grad():
        torch.testing.assert_close(r.model.double().eval()(x), soft(x), rtol=1e-12, atol=1e-12)


def test_slimming_names_the_missing_batchnorm(vit):
    model, _, x, y = vit
    with pytest.raises(BadInput, match="slimming needs a BatchNorm.*patch_embed.proj"):
        sosp.prune(model, "slimming", 0.3, [(x, y)], n_samples=16)


def test_torchvision_vit_prunes_patch_filters_attention_rows_and_mlp_units():
    """torchvision's VisionTransformer (nn.MultiheadAttention in its encoder blocks): the
    structures are the patch embedding's filters, each attention's output rows (heads kept
    whole), each MLP's units and output rows; SOSP-H, SOSP-I (one sampled label) and
    magnitude prune it into its soft mask in float64."""
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.VisionTransformer(
        image_size=16, patch_size=4, num_layers=2, num_heads=2, hidden_dim=8, mlp_dim=12,
        num_classes=10,
    ).double().eval()  # fmt: skip
    graph = analyze(model, (3, 16, 16))
    kinds = {name.rsplit(".", 1)[-1] for name, _ in graph.structures}
    assert kinds == {"conv_proj", "self_attention", "0", "3"}
    assert len(graph.structures) == 8 + 2 * (8 + 12 + 8)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 3, 16, 16, generator=g, dtype=torch.float64)
    y = torch.randint(10, (4,), generator=g)
    for method, options in (("sosp_h", {}), ("sosp_i", {"label_samples": 1}), ("magnitude", {})):
        r = sosp.prune(model, method, 0.4, [(x, y)], n_samples=4, **options)
        soft = soft_masked(model, graph, indices_from_mask(graph, r.mask)).double().eval()
        with torch.no_grad():
            torch.testing.assert_close(r.model(x), soft(x), rtol=1e-9, atol=1e-12)
        assert r.report["pruned_structures"] > 0
