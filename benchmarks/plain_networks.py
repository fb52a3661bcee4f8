"""The reference networks written plainly, as timm and torchvision write them, for benchmarks and tests.

* ``ResNet`` with ``BasicBlock``/``Bottleneck`` — torchvision's ``resnet.py`` (v1.5: stride in the 3×3);
* ``VisionTransformer`` — timm's (pre-norm blocks, fused ``scaled_dot_product_attention``);
* ``ConViT`` — timm's ``convit.py``: GPSA computed the explicit way, with ``B × h × N × N``
  content and positional attention matrices mixed by the gate and renormalised, and MHSA
  as ``softmax(q kᵀ) v``.

Parameter names are the references' own, so their state_dicts are the references' too
(``tests/test_pretrained.py`` checks them against tables written from the references' source).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn
import torch.nn.functional as F


# --------------------------------------------------------------------------------------------
# Plain ResNet (torchvision's resnet.py, v1.5)
# --------------------------------------------------------------------------------------------

class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)  # v1.5: the stride is here
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or inplanes != out:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, out, 1, stride, bias=False), nn.BatchNorm2d(out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    def __init__(self, block: type[BasicBlock] | type[Bottleneck], layers: list[int], num_classes: int = 1000):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2)
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512 * block.expansion, num_classes)

    def _make_layer(self, block, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        layers = [block(self.inplanes, planes, stride)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


# --------------------------------------------------------------------------------------------
# Plain ViT / DeiT (timm's vision_transformer.py) and ConViT (timm's convit.py)
# --------------------------------------------------------------------------------------------

class PatchEmbed(nn.Module):
    def __init__(self, patch: int, in_chans: int, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, patch, patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # (B, N, C)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Attention(nn.Module):
    """timm's ViT ``Attention`` with its default fused path (``F.scaled_dot_product_attention``)."""

    def __init__(self, dim: int, heads: int, qkv_bias: bool = True):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(B, N, C))


class ExplicitMHSA(nn.Module):
    """timm's ``convit.MHSA``: ``softmax(q kᵀ · scale) v`` with the attention matrix written out."""

    def __init__(self, dim: int, heads: int, qkv_bias: bool = False):
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)  # (B, h, N, N)
        return self.proj((attn @ v).transpose(1, 2).reshape(B, N, C))


class ExplicitGPSA(nn.Module):
    """timm's ``convit.GPSA``: content and positional ``B × h × N × N`` attentions, gated, renormalised."""

    def __init__(self, dim: int, heads: int, grid: int, qkv_bias: bool = False):
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qk = nn.Linear(dim, dim * 2, bias=qkv_bias)
        self.v = nn.Linear(dim, dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.pos_proj = nn.Linear(3, heads)
        self.gating_param = nn.Parameter(torch.ones(heads))
        # (1, N, N, 3): (Δx, Δy, Δx² + Δy²), key minus query, as timm's get_rel_indices
        ind = torch.arange(grid).view(1, -1) - torch.arange(grid).view(-1, 1)
        indx = ind.repeat(grid, grid)
        indy = ind.repeat_interleave(grid, dim=0).repeat_interleave(grid, dim=1)
        rel = torch.stack([indx, indy, indx ** 2 + indy ** 2], dim=-1).float()[None]
        self.register_buffer("rel_indices", rel, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        q, k = self.qk(x).reshape(B, N, 2, self.heads, C // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        pos_score = self.pos_proj(self.rel_indices.expand(B, -1, -1, -1)).permute(0, 3, 1, 2)  # (B, h, N, N)
        patch_score = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)  # (B, h, N, N)
        gating = torch.sigmoid(self.gating_param).view(1, -1, 1, 1)
        attn = (1.0 - gating) * patch_score + gating * pos_score.softmax(dim=-1)
        attn = attn / attn.sum(dim=-1, keepdim=True)
        v = self.v(x).reshape(B, N, self.heads, C // self.heads).permute(0, 2, 1, 3)
        return self.proj((attn @ v).transpose(1, 2).reshape(B, N, C))


class Block(nn.Module):
    def __init__(self, dim: int, attn: nn.Module, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = attn
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    """ViT / DeiT: patch embedding, class token, learned positions (class token included), blocks, norm, head."""

    def __init__(self, img: int = 224, patch: int = 16, dim: int = 192, depth: int = 12, heads: int = 3, num_classes: int = 1000):
        super().__init__()
        self.patch_embed = PatchEmbed(patch, 3, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, (img // patch) ** 2 + 1, dim) * 0.02)
        self.blocks = nn.Sequential(*[Block(dim, Attention(dim, heads)) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        x = self.norm(self.blocks(x))
        return self.head(x[:, 0])


class ConViT(nn.Module):
    """ConViT: ``local_layers`` GPSA blocks on the patches, then the class token, then MHSA blocks."""

    def __init__(self, img: int = 224, patch: int = 16, heads: int = 4, head_dim: int = 48, depth: int = 12,
                 local_layers: int = 10, num_classes: int = 1000):
        super().__init__()
        dim, grid = heads * head_dim, img // patch
        self.local_layers = local_layers
        self.patch_embed = PatchEmbed(patch, 3, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, grid * grid, dim) * 0.02)
        self.blocks = nn.ModuleList(
            [Block(dim, ExplicitGPSA(dim, heads, grid)) for _ in range(local_layers)]
            + [Block(dim, ExplicitMHSA(dim, heads)) for _ in range(depth - local_layers)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x) + self.pos_embed
        for i, block in enumerate(self.blocks):
            if i == self.local_layers:
                x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
            x = block(x)
        return self.head(self.norm(x)[:, 0])


#: name → (plain constructor, input size)
PLAIN: dict[str, tuple[Callable[[], nn.Module], int]] = {
    "resnet18": (lambda: ResNet(BasicBlock, [2, 2, 2, 2]), 224),
    "resnet50": (lambda: ResNet(Bottleneck, [3, 4, 6, 3]), 224),
    "deit_tiny_patch16_224": (lambda: VisionTransformer(dim=192, heads=3), 224),
    "vit_base_patch16_224": (lambda: VisionTransformer(dim=768, heads=12), 224),
    "convit_tiny": (lambda: ConViT(heads=4), 224),
    "convit_small": (lambda: ConViT(heads=9), 224),
    "convit_base": (lambda: ConViT(heads=16), 224),
}
