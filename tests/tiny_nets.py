"""Networks small enough to form Jacobians and Hessians explicitly, with their structures'
parameters written out by hand (independent of `sosp.structures`)."""

import torch
import torch.nn.functional as F
from torch import nn


class TinyNet(nn.Module):
    """conv+BN, a residual sum, a concatenation read by a pre-activation (consumer) BN, a
    hidden linear layer, and the classifier. Input [B, 2, 4, 4], 3 outputs. `affine=False`
    gives bn1 no gamma/beta."""

    def __init__(self, affine: bool = True):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 3, 3, padding=1)  # with bias
        self.bn1 = nn.BatchNorm2d(3, affine=affine)
        self.conv2 = nn.Conv2d(3, 3, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(3)
        self.conv3 = nn.Conv2d(3, 2, 1, bias=False)  # concatenated branch, no BN
        self.bn3 = nn.BatchNorm2d(5)  # consumer of the concatenation
        self.hidden = nn.Linear(5, 4)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        a = F.relu(self.bn1(self.conv1(x)))
        b = F.relu(self.bn2(self.conv2(a)) + a)
        c = F.relu(self.bn3(torch.cat([b, self.conv3(b)], 1)))
        return self.fc(torch.tanh(self.hidden(c.mean((2, 3)))))


def tiny_theta(affine: bool = True) -> dict[tuple[str, int], list[tuple[str, int]]]:
    """TinyNet's structures in graph order -> the (parameter, index along dim 0) entries of
    theta_s, read off the forward pass: the slices whose zeroing makes the channel zero.
    Channels 0-2 of bn3 carry the residual stream (written by conv1 and conv2), so they
    belong to no single structure; channels 3-4 are conv3's alone."""
    theta = {}
    for c in range(3):
        bn = [("bn1.weight", c), ("bn1.bias", c)] if affine else []
        theta[("conv1", c)] = [("conv1.weight", c), ("conv1.bias", c), *bn]
    for c in range(3):
        theta[("conv2", c)] = [("conv2.weight", c), ("bn2.weight", c), ("bn2.bias", c)]
    for c in range(2):
        theta[("conv3", c)] = [("conv3.weight", c), ("bn3.weight", 3 + c), ("bn3.bias", 3 + c)]
    for c in range(4):
        theta[("hidden", c)] = [("hidden.weight", c), ("hidden.bias", c)]
    return theta


def tiny_theta_stream(affine: bool = True) -> dict[tuple[str, int], list[tuple[str, int]]]:
    """TinyNet's structures with coupling="stream": channel c of the residual stream (written
    by conv1 and conv2, read by bn3's channel c) is one structure, named after its first
    writer ("conv1", c); theta_s is the union of both writers' slices and bn3's slice of the
    channel, which now belongs to that one structure. conv3 and hidden are unchanged."""
    alone = tiny_theta(affine)
    theta = {}
    for c in range(3):
        theta[("conv1", c)] = [
            *alone[("conv1", c)],
            *alone[("conv2", c)],
            ("bn3.weight", c),
            ("bn3.bias", c),
        ]
    for s, entries in alone.items():
        if s[0] in ("conv3", "hidden"):
            theta[s] = entries
    return theta


def randomized(model: nn.Module, seed: int = 0, dtype=torch.float64) -> nn.Module:
    """`model` in `dtype` and eval mode with random (non-trivial) BN statistics and affines."""
    g = torch.Generator().manual_seed(seed)
    model = model.to(dtype).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm1d | nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g))
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                if m.affine:
                    m.weight.copy_(torch.randn(m.num_features, generator=g))
                    m.bias.copy_(torch.randn(m.num_features, generator=g))
    return model


# -- one tiny network per channel construct, with theta_s written by hand ----------------------
# Each takes [B, 2, 4, 4] to 3 outputs; `*_theta()` lists its structures in graph order.


def weights_and_biases(c: int, *modules: str) -> list[tuple[str, int]]:
    """The theta entries (weight, then bias, of each module in turn) of channel c."""
    return [(f"{m}.{w}", c) for m in modules for w in ("weight", "bias")]


class SqueezeExciteNet(nn.Module):
    """conv1 -> timm's BatchNormAct2d with SiLU (the gate sits between norm and activation)
    -> squeeze-and-excitation (mean, reduce conv, ReLU, expand conv, `gate`, product) ->
    conv2 + BN -> mean -> fc."""

    def __init__(self, gate=torch.sigmoid):
        super().__init__()
        from timm.layers import BatchNormAct2d

        self.gate = gate
        self.conv1 = nn.Conv2d(2, 4, 3, padding=1)
        self.bn1 = BatchNormAct2d(4, act_layer=nn.SiLU)
        self.reduce = nn.Conv2d(4, 2, 1)
        self.expand = nn.Conv2d(2, 4, 1)
        self.conv2 = nn.Conv2d(4, 3, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(3)
        self.fc = nn.Linear(3, 3)

    def forward(self, x):
        x = self.bn1(self.conv1(x))
        gate = self.gate(self.expand(F.relu(self.reduce(x.mean((2, 3), keepdim=True)))))
        x = F.relu(self.bn2(self.conv2(x * gate)))
        return self.fc(x.mean((2, 3)))


def squeeze_excite_theta() -> dict:
    """conv1's channels with bn1's gamma/beta; the SE's reduced channels (reduce conv alone);
    conv2's with bn2. The expand conv's channel c goes with conv1's channel c but is no part
    of its theta_s: zeroing it leaves sigmoid(b) != 0, the product is zero by conv1's side."""
    theta = {}
    for c in range(4):
        theta[("conv1", c)] = weights_and_biases(c, "conv1", "bn1")
    for c in range(2):
        theta[("reduce", c)] = [("reduce.weight", c), ("reduce.bias", c)]
    for c in range(3):
        theta[("conv2", c)] = [("conv2.weight", c), ("bn2.weight", c), ("bn2.bias", c)]
    return theta


class GroupedConvNet(nn.Module):
    """conv1 + BN + ReLU -> grouped conv2 (2 groups, 2 -> 3 channels each) + BN + ReLU ->
    conv3 -> mean -> fc."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 4, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 6, 3, padding=1, groups=2, bias=False)
        self.bn2 = nn.BatchNorm2d(6)
        self.conv3 = nn.Conv2d(6, 3, 1)
        self.fc = nn.Linear(3, 3)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return self.fc(self.conv3(x).mean((2, 3)))


def grouped_conv_theta() -> dict:
    """Group k of conv2 is one structure: conv1's channels 2k, 2k+1 (the group's inputs)
    with bn1's, and conv2's outputs 3k .. 3k+2 with bn2's. conv3's channels alone."""
    theta = {}
    for k in range(2):
        theta[("conv1", 2 * k)] = [
            *[(f"{p}.{w}", c) for c in (2 * k, 2 * k + 1) for p in ("conv1", "bn1")
              for w in ("weight", "bias")],
            *[(f"{p}.{w}", c) for c in range(3 * k, 3 * k + 3)
              for p, w in (("conv2", "weight"), ("bn2", "weight"), ("bn2", "bias"))],
        ]  # fmt: skip
    for c in range(3):
        theta[("conv3", c)] = [("conv3.weight", c), ("conv3.bias", c)]
    return theta


class SplitNet(nn.Module):
    """conv1 + BN + ReLU -> split into channels [0, 2) and [2, 4) -> conv a on the first,
    a depthwise conv (consumer) on the second -> concatenation -> its channels 1 .. 4 sliced
    -> conv2 -> mean -> fc."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 4, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(4)
        self.a = nn.Conv2d(2, 2, 3, padding=1)
        self.dw = nn.Conv2d(2, 2, 3, padding=1, groups=2)
        self.conv2 = nn.Conv2d(3, 3, 1)
        self.fc = nn.Linear(3, 3)

    def forward(self, x):
        first, rest = torch.split(F.relu(self.bn1(self.conv1(x))), [2, 2], dim=1)
        x = torch.cat([self.a(first), self.dw(rest)], 1)[:, 1:]
        return self.fc(self.conv2(x).mean((2, 3)))


def split_theta() -> dict:
    """conv1's channels with bn1's; channels 2, 3 also with the depthwise conv's slice (its
    only writer is that conv1 channel). a's channels alone (its channel 0 is sliced away: a
    structure whose removal changes nothing); conv2's alone."""
    theta = {}
    for c in range(4):
        dw = [("dw.weight", c - 2), ("dw.bias", c - 2)] if c >= 2 else []
        theta[("conv1", c)] = [*weights_and_biases(c, "conv1", "bn1"), *dw]
    for c in range(2):
        theta[("a", c)] = [("a.weight", c), ("a.bias", c)]
    for c in range(3):
        theta[("conv2", c)] = [("conv2.weight", c), ("conv2.bias", c)]
    return theta


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    """ShuffleNet's shuffle, written as torchvision writes it (view, transpose, view)."""
    batch, channels, height, width = x.size()
    x = x.view(batch, groups, channels // groups, height, width)
    return torch.transpose(x, 1, 2).contiguous().view(batch, channels, height, width)


class ShuffleNet(nn.Module):
    """conv1 + BN + ReLU -> chunk in two -> the second half through conv b + BN + ReLU ->
    concatenation -> channel shuffle (2 groups) -> conv2 -> mean -> fc."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 4, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(4)
        self.b = nn.Conv2d(2, 2, 3, padding=1, bias=False)
        self.bn_b = nn.BatchNorm2d(2)
        self.conv2 = nn.Conv2d(4, 3, 1)
        self.fc = nn.Linear(3, 3)

    def forward(self, x):
        first, second = F.relu(self.bn1(self.conv1(x))).chunk(2, dim=1)
        x = torch.cat([first, F.relu(self.bn_b(self.b(second)))], 1)
        return self.fc(self.conv2(channel_shuffle(x, 2)).mean((2, 3)))


def shuffle_theta() -> dict:
    """conv1's channels with bn1's, b's with bn_b's, conv2's: the shuffle moves channels,
    it owns no parameters."""
    theta = {}
    for c in range(4):
        theta[("conv1", c)] = weights_and_biases(c, "conv1", "bn1")
    for c in range(2):
        theta[("b", c)] = [("b.weight", c), ("bn_b.weight", c), ("bn_b.bias", c)]
    for c in range(3):
        theta[("conv2", c)] = [("conv2.weight", c), ("conv2.bias", c)]
    return theta


class ConvNeXtNet(nn.Module):
    """conv1 + timm's LayerNorm2d (over dim 1) -> a ConvNeXt block: depthwise conv, permute
    to channels-last, LayerNorm, Linear 4 -> 6, GELU, Linear 6 -> 4, permute back, a
    per-channel layer scale, the residual sum -> mean -> fc."""

    def __init__(self):
        super().__init__()
        from timm.layers import LayerNorm2d

        self.conv1 = nn.Conv2d(2, 4, 3, padding=1)
        self.ln1 = LayerNorm2d(4)
        self.dw = nn.Conv2d(4, 4, 3, padding=1, groups=4)
        self.ln2 = nn.LayerNorm(4)
        self.fc1, self.fc2 = nn.Linear(4, 6), nn.Linear(6, 4)
        self.gamma = nn.Parameter(torch.rand(4) + 0.5)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        x = self.ln1(self.conv1(x))
        y = self.ln2(self.dw(x).permute(0, 2, 3, 1))
        y = self.fc2(F.gelu(self.fc1(y))).permute(0, 3, 1, 2)
        return self.fc((x + y * self.gamma.reshape(1, -1, 1, 1)).mean((2, 3)))


def convnext_theta() -> dict:
    """conv1's channels with ln1's (its private norm), and the depthwise conv's and ln2's
    slices (their channel's only writer is conv1's channel: the block reads the stream before
    the sum); fc1's; fc2's. The layer scale gamma goes with fc2's channel but is no part of
    theta_s (like an SE gate: zeroing fc2's slice alone zeroes the product)."""
    theta = {}
    for c in range(4):
        theta[("conv1", c)] = weights_and_biases(c, "conv1", "ln1", "dw", "ln2")
    for c in range(6):
        theta[("fc1", c)] = [("fc1.weight", c), ("fc1.bias", c)]
    for c in range(4):
        theta[("fc2", c)] = [("fc2.weight", c), ("fc2.bias", c)]
    return theta


class TinyViT(nn.Module):
    """A vision transformer on 2x4x4 inputs: a 2x2 patch embedding (4 channels, 4 tokens), an
    attention with q/k norms on the patch tokens alone (`attn0`: one writer, its heads whole;
    its input channels can die, so surgery shrinks its qkv's inputs), a class token and a
    position embedding, one block of timm's attention (2 heads of 2, each a structure) and an
    MLP 4 -> 6 -> 4, each behind a LayerNorm and added to the stream, a final LayerNorm, the
    class token to the classifier. `fused`: attention by
    F.scaled_dot_product_attention, which PyTorch cannot differentiate twice (so not for the
    brute force), else its explicit form. `class_token=False`: none, the position embedding
    added to the patches' tokens (scattered into the stream where they lose channels) and the
    tokens averaged for the classifier."""

    def __init__(self, fused: bool = False, class_token: bool = True):
        super().__init__()
        from timm.layers import Attention

        self.patch = nn.Conv2d(2, 4, 2, stride=2)
        self.cls_token = nn.Parameter(torch.randn(1, 1, 4)) if class_token else None
        self.pos_embed = nn.Parameter(torch.randn(1, 4 + class_token, 4))
        self.norm1, self.norm2, self.norm = nn.LayerNorm(4), nn.LayerNorm(4), nn.LayerNorm(4)
        self.attn0 = Attention(4, num_heads=2, qkv_bias=True, qk_norm=True, norm_layer=nn.LayerNorm)
        self.attn = Attention(4, num_heads=2, qkv_bias=True)
        self.attn0.fused_attn = self.attn.fused_attn = fused
        self.fc1, self.fc2 = nn.Linear(4, 6), nn.Linear(6, 4)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        x = self.attn0(self.patch(x).flatten(2).transpose(1, 2))
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = x + self.pos_embed
        x = x + self.attn(self.norm1(x))
        x = x + self.fc2(F.gelu(self.fc1(self.norm2(x))))
        x = self.norm(x)
        return self.fc(x[:, 0] if self.cls_token is not None else x.mean(1))


def vit_theta() -> dict:
    """The patch embedding's filters; attn0's output rows (its proj); attn's heads (the q, k
    and v rows of qkv, channels t * 4 + h * 2 + d) and its proj's rows; fc1's and fc2's rows.
    Each stream channel also holds the class token's and the position embedding's entries, so
    no stream channel dies and the LayerNorms, which read the stream, hold none."""
    theta = {}
    for c in range(4):
        theta[("patch", c)] = [("patch.weight", c), ("patch.bias", c)]
    for c in range(4):
        theta[("attn0", c)] = [("attn0.proj.weight", c), ("attn0.proj.bias", c)]
    for h in range(2):
        rows = [t * 4 + h * 2 + d for t in range(3) for d in range(2)]
        theta[("attn.qkv", 2 * h)] = [
            (f"attn.qkv.{p}", r) for r in rows for p in ("weight", "bias")
        ]
    for c in range(4):
        theta[("attn.proj", c)] = [("attn.proj.weight", c), ("attn.proj.bias", c)]
    for c in range(6):
        theta[("fc1", c)] = [("fc1.weight", c), ("fc1.bias", c)]
    for c in range(4):
        theta[("fc2", c)] = [("fc2.weight", c), ("fc2.bias", c)]
    return theta


class GroupNormNet(nn.Module):
    """conv1 (2 -> 6) -> GroupNorm (3 groups of 2, conv1's private norm) -> ReLU -> conv2
    (6 -> 4) -> the sum with a 1x1 shortcut conv of conv1's output -> GroupNorm (2 groups, a
    consumer of the sum) -> mean -> fc: a pruned channel still counts in its group's
    statistics."""

    def __init__(self):
        super().__init__()
        self.conv1, self.gn1 = nn.Conv2d(2, 6, 3, padding=1), nn.GroupNorm(3, 6)
        self.conv2, self.short = nn.Conv2d(6, 4, 3, padding=1), nn.Conv2d(6, 4, 1)
        self.gn2 = nn.GroupNorm(2, 4)
        self.fc = nn.Linear(4, 3)
        with torch.no_grad():  # affines other than 1 and 0, so a forgotten beta shows
            for gn in (self.gn1, self.gn2):
                gn.weight.normal_(1, 0.5)
                gn.bias.normal_(0, 0.5)

    def forward(self, x):
        x = F.relu(self.gn1(self.conv1(x)))
        return self.fc(F.relu(self.gn2(self.conv2(x) + self.short(x))).mean((2, 3)))


def group_norm_theta() -> dict:
    """conv1's channels with gn1's (its private norm); conv2's and the shortcut's channels,
    each alone (a stream channel dies only when both go, so gn2, which reads the sum, holds no
    part of either)."""
    theta = {}
    for c in range(6):
        theta[("conv1", c)] = [
            ("conv1.weight", c),
            ("conv1.bias", c),
            ("gn1.weight", c),
            ("gn1.bias", c),
        ]
    for name in ("conv2", "short"):
        for c in range(4):
            theta[(name, c)] = [(f"{name}.weight", c), (f"{name}.bias", c)]
    return theta


class SamePaddingNet(nn.Module):
    """timm's Conv2dSame (TensorFlow's "same" padding, as every tf_* model has): a strided one
    (padding 0 before and 1 after on 4x4), its BatchNorm, ReLU, a second one, mean, fc."""

    def __init__(self):
        super().__init__()
        from timm.layers import Conv2dSame

        self.conv1, self.bn1 = Conv2dSame(2, 4, 3, stride=2), nn.BatchNorm2d(4)
        self.conv2 = Conv2dSame(4, 3, 3)
        self.fc = nn.Linear(3, 3)

    def forward(self, x):
        return self.fc(self.conv2(F.relu(self.bn1(self.conv1(x)))).mean((2, 3)))


def same_padding_theta() -> dict:
    """conv1's channels with bn1's, conv2's."""
    theta = {("conv1", c): weights_and_biases(c, "conv1", "bn1") for c in range(4)}
    theta.update({("conv2", c): [("conv2.weight", c), ("conv2.bias", c)] for c in range(3)})
    return theta


class PoolMixerNet(nn.Module):
    """A PoolFormer block: conv1 -> GroupNorm of one group -> the token mixer pool(x) - x ->
    a layer scale viewed to a traced constant shape (4, 1, 1) -> the residual sum -> mean
    -> fc."""

    def __init__(self):
        super().__init__()
        self.conv1, self.norm = nn.Conv2d(2, 4, 3, padding=1), nn.GroupNorm(1, 4)
        self.scale = nn.Parameter(torch.rand(4) + 0.5)
        self.shape = (4, 1, 1)
        self.fc = nn.Linear(4, 3)
        with torch.no_grad():
            self.norm.weight.normal_(1, 0.5)
            self.norm.bias.normal_(0, 0.5)

    def forward(self, x):
        x = self.conv1(x)
        y = self.norm(x)
        y = F.avg_pool2d(y, 3, 1, 1, count_include_pad=False) - y
        return self.fc((x + y * self.scale.view(self.shape)).mean((2, 3)))


def pool_mixer_theta() -> dict:
    """conv1's channels with the norm's (it reads conv1's output only, before the sum): the
    difference and the layer scale own no part of theta_s."""
    return {("conv1", c): weights_and_biases(c, "conv1", "norm") for c in range(4)}


class TokenMapNet(nn.Module):
    """PiT's moves between feature maps and tokens: conv1 (2 -> 4) plus a position embedding
    [1, 4, 4, 4] (one value per channel and position, so conv1's channels die into a stream
    that does not), the map as tokens, an MLP block 4 -> 6 -> 4 behind a LayerNorm added to
    them, a projection 4 -> 5, the tokens back to a map by a reshape with the literal channel
    count 5, conv2 (5 -> 3) -> ReLU -> mean -> fc."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 4, 3, padding=1)
        self.pos_embed = nn.Parameter(torch.randn(1, 4, 4, 4))
        self.norm = nn.LayerNorm(4)
        self.fc1, self.fc2, self.proj = nn.Linear(4, 6), nn.Linear(6, 4), nn.Linear(4, 5)
        self.conv2, self.fc = nn.Conv2d(5, 3, 3, padding=1), nn.Linear(3, 3)

    def forward(self, x):
        x = (self.conv1(x) + self.pos_embed).flatten(2).transpose(1, 2)
        x = x + self.fc2(F.gelu(self.fc1(self.norm(x))))
        x = self.proj(x).transpose(1, 2).reshape(x.shape[0], 5, 4, 4)
        return self.fc(F.relu(self.conv2(x)).mean((2, 3)))


def token_map_theta() -> dict:
    """conv1's filters (the position embedding holds every stream channel), fc1's units,
    fc2's and proj's rows, conv2's filters."""
    theta = {("conv1", c): [("conv1.weight", c), ("conv1.bias", c)] for c in range(4)}
    for name, n in (("fc1", 6), ("fc2", 4), ("proj", 5), ("conv2", 3)):
        theta.update({(name, c): [(f"{name}.weight", c), (f"{name}.bias", c)] for c in range(n)})
    return theta


class TorchAttentionNet(nn.Module):
    """torchvision's encoder block on 2x4x4 inputs: a 2x2 patch embedding (4 channels, 4
    tokens), a position embedding, `nn.MultiheadAttention` (2 heads, batch first, as
    self-attention behind a LayerNorm) added to the stream, the tokens averaged, a hidden
    layer (5 units), fc."""

    def __init__(self):
        super().__init__()
        self.patch = nn.Conv2d(2, 4, 2, stride=2)
        self.pos_embed = nn.Parameter(torch.randn(1, 4, 4))
        self.norm = nn.LayerNorm(4)
        self.attn = nn.MultiheadAttention(4, 2, batch_first=True)
        self.hidden, self.fc = nn.Linear(4, 5), nn.Linear(5, 3)

    def forward(self, x):
        x = self.patch(x).flatten(2).permute(0, 2, 1) + self.pos_embed
        y = self.norm(x)
        x = x + self.attn(y, y, y, need_weights=False)[0]
        return self.fc(F.gelu(self.hidden(x.mean(1))))


def torch_attention_theta() -> dict:
    """The patch embedding's filters, the attention's output rows (out_proj's) and the
    hidden units before the classifier."""
    theta = {("patch", c): [("patch.weight", c), ("patch.bias", c)] for c in range(4)}
    theta.update(
        {("attn", c): [("attn.out_proj.weight", c), ("attn.out_proj.bias", c)] for c in range(4)}
    )
    theta.update({("hidden", c): [("hidden.weight", c), ("hidden.bias", c)] for c in range(5)})
    return theta


CONSTRUCTS = {
    "squeeze_excite": (SqueezeExciteNet, squeeze_excite_theta),
    "grouped_conv": (GroupedConvNet, grouped_conv_theta),
    "split": (SplitNet, split_theta),
    "channel_shuffle": (ShuffleNet, shuffle_theta),
    "channels_last_layer_norm": (ConvNeXtNet, convnext_theta),
    "vision_transformer": (TinyViT, vit_theta),
    "vision_transformer_without_class_token": (lambda: TinyViT(class_token=False), vit_theta),
    "group_norm": (GroupNormNet, group_norm_theta),
    "tf_same_padding": (SamePaddingNet, same_padding_theta),
    "pool_mixer": (PoolMixerNet, pool_mixer_theta),
    "token_map": (TokenMapNet, token_map_theta),
    "torch_multihead_attention": (TorchAttentionNet, torch_attention_theta),
}
