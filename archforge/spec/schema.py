"""The spec language as pydantic models: the structure before any param is resolved.

Values may still be ``$name`` references or ``${...}`` expressions here; the graph
stage resolves them. Block arguments are checked later by each block's own ``Args``.
"""

from __future__ import annotations

import re

from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, StrictInt, field_validator

from archforge.spec.located_yaml import LocatedDocument

FORMAT_VERSION = 1
#: How a network's initial values are set: as each block's reference implementation does (``Block.init_weights``),
#: or as each block's ``build`` leaves them (PyTorch's layer defaults plus the block's own constructor inits).
InitMode = Literal["reference", "pytorch"]
INIT_MODES: tuple[str, ...] = get_args(InitMode)
IDENTIFIER = r"^[A-Za-z_][A-Za-z0-9_]*$"
# A block name, short (`conv`) or qualified by its plugin's entry point (`halo:halo_attention`).
BLOCK_NAME = r"(?:[A-Za-z0-9_][A-Za-z0-9_.-]*:)?[A-Za-z_][A-Za-z0-9_]*"
# A block name, or a `$param` that holds one.
BLOCK_REFERENCE = rf"^(?:\$[A-Za-z_][A-Za-z0-9_]*|{BLOCK_NAME})$"


def is_block_name(value: object) -> bool:
    """Whether ``value`` is a short or qualified block name (what a resolved ``block:`` must be)."""
    return isinstance(value, str) and re.fullmatch(BLOCK_NAME, value) is not None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class NodeSpec(_Strict):
    """One node: a block (or a ``define``d sub-graph), its args, its inputs, and how often to repeat it."""

    id: str | None = Field(None, pattern=IDENTIFIER, description="Unique within its list; default: <block>_<index>.")
    block: str = Field(pattern=BLOCK_REFERENCE, description="A registered block, a define, or a $param naming one.")
    args: dict[str, Any] = Field(default_factory=dict, description="Arguments of the block or params of the define.")
    in_: str | list[str] | None = Field(None, alias="in", description="Input node id(s); default: the previous node.")
    repeat: int | float | str | None = Field(None, description="Stamp this many chained copies (ids <id>[0], <id>[1], ...).")
    continues: str | None = Field(
        None, pattern=IDENTIFIER,
        description="With repeat: number the copies after those of this earlier repeated node and name them like its copies "
                    "(ConViT's 2 global layers continue its 10 local ones as blocks[10], blocks[11]).",
    )
    init: InitMode | None = Field(
        None, description="Initialisation of this node (and of every node a define or repeat here expands to that sets "
                          "none): 'reference' as the block's reference implementation, 'pytorch' as build leaves it. "
                          "Default: the spec's.",
    )

    @field_validator("repeat", mode="before")
    @classmethod
    def _repeat_type(cls, value: Any) -> Any:
        # `repeat: true` must not quietly mean 1; whether a number is a whole one is checked after expansion.
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float, str))):
            raise ValueError("expected an integer or a ${...} expression")
        return value


class DefineSpec(_Strict):
    """A reusable, parameterised sub-graph, used in ``block:`` like a block."""

    description: str = ""
    params: dict[str, Any] = Field(default_factory=dict, description="Params with their default values.")
    inputs: list[Annotated[str, Field(pattern=IDENTIFIER)]] = Field(
        default_factory=lambda: ["input"], min_length=1, description="Names of the inputs inside the body, each once."
    )
    nodes: list[NodeSpec] = Field(min_length=1)
    output: str | None = Field(None, pattern=IDENTIFIER)


class InputSpec(_Strict):
    """Per-sample input shape: ``[C, H, W]`` (feature map), ``[N, C]`` (tokens) or ``[C]`` (vector)."""

    shape: list[StrictInt] = Field(min_length=1, max_length=3)


class Spec(_Strict):
    """A whole network. Create one with :func:`archforge.load_spec` or :meth:`Spec.from_dict`."""

    archforge: Literal[1] = Field(description="Format version of the spec language.")
    name: str = Field(pattern=IDENTIFIER)
    description: str = ""
    input: InputSpec
    params: dict[str, Any] = Field(default_factory=dict)
    init: InitMode = Field(
        "reference", description="Initial values: 'reference' as each block's reference implementation (timm's ViT, ConViT, "
                                 "ResNet ...), 'pytorch' as each block's build leaves them; a node's own 'init' overrides it.",
    )
    # Define names are plain identifiers: 'builtin:conv' as a define would replace the qualified block name.
    define: dict[Annotated[str, Field(pattern=IDENTIFIER)], DefineSpec] = Field(default_factory=dict)
    nodes: list[NodeSpec] = Field(min_length=1)
    output: str | None = Field(None, pattern=IDENTIFIER)

    _document: LocatedDocument | None = PrivateAttr(default=None)

    @property
    def document(self) -> LocatedDocument:
        """The YAML the spec came from, with locations (a synthetic one for specs built from dicts)."""
        if self._document is None:
            self._document = LocatedDocument(data=self.to_dict(), file=f"<spec {self.name}>")
        return self._document

    @property
    def file(self) -> str:
        return self.document.file

    def to_dict(self) -> dict[str, Any]:
        """Plain data that :meth:`from_dict` and ``archforge`` read back to the same spec."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True, exclude_defaults=True) | {"archforge": self.archforge}

    def to_yaml(self) -> str:
        from archforge.spec.located_yaml import dump_yaml

        return dump_yaml(self.to_dict())

    @classmethod
    def from_dict(cls, data: dict[str, Any], file: str = "<dict>") -> "Spec":
        from archforge.spec.load import spec_from_document

        return spec_from_document(LocatedDocument(data=data, file=file))
