"""``example_scale``: multiply every channel by a learnable factor (LayerScale, Touvron et al. 2021).

This file is the template of one block. Keep to one concept per file, and put the
formula and the paper in the module docstring, as here::

    y = γ ⊙ x        γ ∈ ℝ^C, initialised to ``value``

CaiT ("Going deeper with Image Transformers", Touvron et al. 2021) puts it at the end
of each residual branch with a small ``value`` (1e-5 … 0.1) so that deep stacks start
close to the identity.
"""

from __future__ import annotations

# Import only from `archforge.plugin` (the plugin API, and its manual: read it once) and from
# torch/pydantic: archforge's internals can change between minor versions, the plugin API cannot.
import torch
from pydantic import Field
from torch import nn

from archforge.plugin import Block, BlockArgs, Shape, ShapeError


# The block's arguments as a pydantic model. Subclass BlockArgs: unknown keys are errors (a
# typo in a spec is reported with its line) and values are immutable. Field constraints and
# descriptions show up in `archforge plugins`, in the JSON Schema editors use (`archforge
# schema`), and in located error messages.
class ExampleScaleArgs(BlockArgs):
    value: float = Field(1e-4, gt=0, description="Initial value of every γ.")
    channels: int | None = Field(None, gt=0, description="Expected input channels; checked when given.")


# Block[ExampleScaleArgs]: Block is generic over its arguments, so a type checker knows
# what `args` holds in infer and build (args.value is a float, args.vlaue an error).
class ExampleScale(Block[ExampleScaleArgs]):
    # The first line of the class docstring is what `archforge plugins` shows.
    """Per-channel learnable scale ``y = γ ⊙ x`` (LayerScale)."""

    # The word a spec writes in `block:`. It must be an identifier; a built-in block keeps
    # its name against any plugin (yours would then be reachable only as
    # `myplugin:<name>`), so prefer a specific name.
    name = "example_scale"

    # The layout(s) the block consumes: "map" (B, C, H, W), "tokens" (B, N, C),
    # "vector" (B, C), a tuple of them, or "any". When the producer's layout differs,
    # archforge inserts the map ↔ tokens conversion itself (tokens with extra class
    # tokens cannot become a map; a vector never converts).
    layout = ("map", "tokens", "vector")

    # How many inputs: 1 (the default), or None for "two or more" (merges such as add).
    inputs = 1

    # Colours the diagrams (`archforge graph`) and groups summaries. One of: conv,
    # attention, mlp, positional, norm, activation, merge, pool, head, layout, other.
    family = "other"

    # The arguments' model, validated before infer or build sees a value.
    Args = ExampleScaleArgs

    def infer(self, x: Shape, args: ExampleScaleArgs) -> Shape:
        # Output shape from input shape and args, WITHOUT allocating anything: archforge
        # calls this for every node when it validates a spec. `x` is one Shape (a list of
        # them when inputs != 1), already converted to one of `layout`.
        # When the input does not fit, raise ShapeError with a short message; archforge
        # adds the file, line, node and the producers' names and shapes.
        if args.channels is not None and x.channels != args.channels:
            raise ShapeError(f"expected {args.channels} input channels, got {x.channels}")
        return x

    def build(self, x: Shape, args: ExampleScaleArgs, *, device=None, dtype=None) -> nn.Module:
        # The module. Create every parameter and buffer with the given device and dtype
        # (device="meta" must allocate nothing). The module's forward takes one tensor per
        # input, in order, and returns one tensor of the inferred shape. Parameter names
        # are prefixed by the node's path in the network (`stage1.0.scale.gamma`), so
        # keep them short and stable.
        return Scale(x.channels, x.layout == "map", args.value, device=device, dtype=dtype)

    def init_weights(self, module: nn.Module, x: Shape, args: ExampleScaleArgs) -> None:
        # Optional: the initial values of the block's reference implementation, set in place
        # (torch.nn.init, or .fill_/.copy_ under no_grad, which archforge applies). archforge
        # calls it after build when the spec asks for `init: reference` (the default); under
        # `init: pytorch` the module keeps what build made. Change values only: never replace
        # a parameter or change its shape, dtype or device. CaiT's LayerScale starts at the
        # constant γ = value, which build already made: this override only shows the hook.
        nn.init.constant_(module.gamma, args.value)


class Scale(nn.Module):
    """``x * γ`` with γ broadcast over positions; the parameter is ``gamma``."""

    def __init__(self, channels: int, channels_first: bool, value: float, *, device=None, dtype=None):
        super().__init__()
        self.channels_first = channels_first
        self.gamma = nn.Parameter(torch.full((channels,), value, device=device, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Vectorised, no Python loop over positions: torch.compile, torch.export, autocast
        # and the meta device all see plain tensor operations.
        gamma = self.gamma[:, None, None] if self.channels_first else self.gamma
        return x * gamma.to(x.dtype)
