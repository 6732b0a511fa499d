"""A vision transformer for small images (timm's `VisionTransformer`): patches of 2 pixels on
digits' 8x8 (16 tokens), of 4 on CIFAR's 32x32 (64 tokens), a class token, 4 blocks of 2
heads, width 64, MLP 128, fused attention. SOSP prunes its MLP units, attention output rows
and patch-embedding filters (`sosp.channel_rules.AttentionRule`)."""

from __future__ import annotations

from torch import nn

from sosp.models.base import ModelSpec


def vit_mini(
    num_classes: int = 10,
    in_channels: int = 3,
    image_size: int = 32,
    patch_size: int | None = None,
    depth: int = 4,
    width: int = 64,
    heads: int = 2,
) -> nn.Module:
    """The small ViT for [B, in_channels, image_size, image_size] inputs (patch_size default:
    2 up to 8x8, else 4)."""
    from timm.models.vision_transformer import VisionTransformer  # timm only when built

    patch = patch_size or (2 if image_size <= 8 else 4)
    return VisionTransformer(
        img_size=image_size,
        patch_size=patch,
        in_chans=in_channels,
        num_classes=num_classes,
        embed_dim=width,
        depth=depth,
        num_heads=heads,
        mlp_ratio=2.0,
    )


MODELS = {
    "vit_mini": ModelSpec(
        vit_mini,
        "small vision transformer: patches of 2 (8x8) or 4 pixels, 4 blocks of 2 heads, width 64",
    )
}
