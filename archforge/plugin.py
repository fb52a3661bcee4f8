"""The plugin author's manual and import: everything a block plugin needs, and nothing of the builder or search.

A **plugin** is a Python module that implements one or more of the hooks below, each
marked with :data:`hookimpl`. An installed distribution announces it through an entry
point in the ``archforge`` group; there is no registration call::

    # pyproject.toml of the plugin's distribution
    [project.entry-points.archforge]
    halo = "archforge_halo.blocks"      # entry-point name = the plugin's namespace; value = the module

    # archforge_halo/blocks.py
    from archforge.plugin import hookimpl
    ARCHFORGE_PLUGIN_API = 1            # the plugin API major it was written for

    @hookimpl
    def archforge_blocks():
        return [HaloAttention, LambdaLayer]

archforge's own blocks come in through the same door (the ``builtin`` entry point of the
``archforge-nn`` distribution); the working examples are ``plugins/template/`` (the
smallest complete plugin) and ``plugins/archforge-halo/``; ``docs/plugins.md`` is the guide.

**What is imported, and when.** This module imports torch, pydantic and pluggy and none
of archforge's builder, graph, search or data, so ``from archforge.plugin import ...`` costs
little more than ``import torch``. archforge reads the ``archforge`` entry points once per
process, the first time a registry is needed (validating, summarising or building a spec,
``archforge plugins``, a search), in a fixed order (distribution name, then entry-point
name); it imports each module, calls each of its hooks once, and creates each returned
block class once with no arguments. Keep the module cheap to import: it is imported
whenever any spec is validated; import heavy optional dependencies inside ``build`` or a
dataset's ``load``. Any fault of a plugin (an import that raises, even ``SystemExit``; a
hook that raises or returns the wrong type; a block that breaks the contract) is one
:class:`~archforge.errors.PluginWarning` naming the entry point and the distribution, and
only that plugin, or that block, is skipped.

**Rules every plugin keeps.**

* *Layouts.* A tensor between two nodes is a ``map`` ``(B, C, H, W)``, ``tokens``
  ``(B, N, C)`` on an ``H × W`` grid with ``extra_tokens`` (class tokens) prepended, so
  ``N = extra_tokens + H·W``, or a ``vector`` ``(B, C)``. A block declares the layouts it
  consumes (:attr:`Block.layout`); when a producer's differs, archforge converts it, trying
  the accepted layouts in order: map → tokens (row-major flatten) always, tokens → map
  only without extra tokens, a vector never. ``infer`` and ``build`` receive the converted
  shape, so a ``"map"`` block only ever sees maps.
* *Shapes.* :class:`Shape` is a frozen dataclass without the batch: ``layout``,
  ``channels``, ``grid`` (``(H, W)``, empty for a vector), ``extra_tokens``; derived
  ``height``, ``width``, ``num_tokens``, ``dims()`` (the tensor shape without ``B``);
  built with ``Shape.map(c, h, w)``, ``Shape.tokens(c, (h, w), extra_tokens=0)``,
  ``Shape.vector(c)``, changed with ``.replace(...)``; ``.example(batch, device=, dtype=)``
  is a random tensor of it.
* *Device and dtype.* ``build`` creates every parameter and buffer with the ``device`` and
  ``dtype`` it is given (torch's factory keywords); ``device="meta"`` must allocate nothing.
* *Determinism.* ``infer`` is a pure function of its arguments (no tensors, no randomness).
  ``build`` draws random initial values only from torch's global generator, which archforge
  seeds, and ``forward`` depends only on its inputs and the module's tensors (dropout in
  training aside). Keep ``forward`` vectorised and free of data-dependent Python control
  flow, so that ``torch.compile``, ``torch.export``, autocast and the meta device work.
* *Initialisation.* ``build`` may leave torch's layer defaults; a block whose reference
  implementation initialises differently says so in :meth:`Block.init_weights`, which
  archforge calls after ``build`` when the spec (or the node) asks for ``init: reference``,
  the default. ``init: pytorch`` keeps what ``build`` made.
* *No downloads.* Nothing a plugin runs (import, hooks, ``infer``, ``build``, a dataset's
  ``load``, a metric) fetches anything from the network; ship data with the package.
* *Errors.* ``infer`` raises :class:`ShapeError` with a short reason when the input does not
  fit; archforge adds the file, line, node and producers. Invalid arguments are the
  business of the block's pydantic ``Args`` (field constraints, or ``ValueError`` in a
  validator), checked before ``infer`` runs. Anything else a block raises is reported as a
  fault of the plugin, naming it and the node.
* *API version.* ``ARCHFORGE_PLUGIN_API = 1`` at module level declares the major version of
  this API (the hooks, :class:`Block`, :class:`Shape`, ``archforge.testing``) the plugin was
  written for; a plugin declaring another major than ``archforge.registry.PLUGIN_API_VERSION``
  is refused with a warning. Additions keep the major.

**What a plugin imports.** This module (the hooks' value types included), and
``archforge.testing`` in tests (``check_block`` asserts the whole block contract in one
call, ``registry_with`` adds blocks to a registry without installing them). Everything
else in archforge may change in any release.
"""

from __future__ import annotations

from typing import Any, ClassVar, Generic, Sequence, TypeVar

import pluggy
import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from archforge.errors import ShapeError
from archforge.registry.extensions import DatasetSource, ImageData, Metric, MetricContext
from archforge.registry.parameter_node import ParameterNode
from archforge.registry.shape import LAYOUTS, Layout, MapToTokens, Shape, TokensToMap

#: The pluggy project name: the entry-point group and the prefix of every hook.
PROJECT = "archforge"
#: Marks a hook specification (archforge's own, below).
hookspec = pluggy.HookspecMarker(PROJECT)
#: Marks a plugin's hook implementation: ``@hookimpl``; ``@hookimpl(optionalhook=True)`` for a
#: hook that an older archforge may not have. Hook wrappers are not supported.
hookimpl = pluggy.HookimplMarker(PROJECT)

#: What :attr:`Block.family` may be: it colours diagrams and groups summaries.
FAMILIES = ("conv", "attention", "mlp", "positional", "norm", "activation", "merge", "pool", "head", "layout", "other")


class BlockArgs(BaseModel):
    """Base of every block's ``Args``: unknown keys are errors and values are immutable.

    ``extra="forbid"`` makes a misspelt key in a spec a located error with a "did you
    mean"; ``frozen=True`` lets archforge share and hash validated arguments. Constraints
    (``Field(8, gt=0, description=...)``) are checked before ``infer`` runs, and their
    descriptions appear in ``archforge plugins`` and in the editor schema. Cross-field rules
    go in ``field_validator``/``model_validator`` raising ``ValueError`` with a short
    message. Spec values may be ``$param`` references and ``${...}`` expressions: they are
    resolved before the model sees them, so declare the real types (``int``, not
    ``int | str``). Nested models subclass ``BlockArgs`` too.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)


ArgsT = TypeVar("ArgsT", bound=BaseModel)


class Block(Generic[ArgsT]):
    """Base class of every block: set the class attributes, implement :meth:`infer` and :meth:`build`.

    ``Block`` is generic over its arguments, so that ``args`` is typed in ``infer`` and
    ``build``: ``class Scale(Block[ScaleArgs])`` with ``Args = ScaleArgs``. A plain
    ``class Scale(Block)`` works the same at run time. Example::

        class ScaleArgs(BlockArgs):
            init: float = Field(1.0, gt=0)

        class Scale(Block[ScaleArgs]):
            \"\"\"Multiply by a learnable per-channel factor.\"\"\"   # the first line is what listings show
            name = "scale"
            layout = ("map", "tokens")
            family = "other"
            Args = ScaleArgs

            def infer(self, x: Shape, args: ScaleArgs) -> Shape:
                return x

            def build(self, x: Shape, args: ScaleArgs, *, device=None, dtype=None) -> nn.Module:
                return ScaleModule(x.channels, args.init, device=device, dtype=dtype)

    archforge creates one instance per class, with no arguments, when the plugin loads: do
    not require constructor arguments, do no work in ``__init__``, and do not change the
    class attributes on the instance. A class that breaks any rule below is skipped with
    one warning listing every problem (:meth:`contract_problems`).
    """

    #: The word a spec writes in ``block:``: an ASCII identifier (``[A-Za-z_][A-Za-z0-9_]*``).
    #: It is also reachable as ``<entry point>:<name>``; a built-in keeps its short name against
    #: any plugin, so prefer specific names (``halo_attention``, not ``attention``).
    name: ClassVar[str]
    #: The layout(s) consumed: ``"map"``, ``"tokens"``, ``"vector"``, a tuple of them (tried in
    #: order when converting), or ``"any"``. The output layout is whatever :meth:`infer` returns.
    layout: ClassVar[Layout | tuple[Layout, ...] | str] = "any"
    #: The number of inputs: ``1``, an integer ``n > 1``, or ``None`` for two or more (merges such
    #: as ``add``; the spec lists them in ``in:``). A wrong count is a spec error before any call.
    inputs: ClassVar[int | None] = 1
    #: One of :data:`FAMILIES`; it colours ``archforge graph`` diagrams and groups summaries. A
    #: block of family ``"merge"`` with several inputs also has its map and tokens inputs
    #: converted to the layout of the first of them (``add`` of a conv and an attention branch).
    family: ClassVar[str] = "other"
    #: The pydantic model of the arguments, a subclass of :class:`BlockArgs` (strict and frozen),
    #: validated before :meth:`infer` runs. A block without arguments keeps ``BlockArgs``.
    Args: ClassVar[type[ArgsT]] = BlockArgs  # type: ignore[assignment]  # right for Block[BlockArgs], replaced by every other

    def infer(self, x: Any, args: ArgsT) -> Shape:
        """The output shape, without allocating anything.

        ``x`` is one :class:`Shape` when ``inputs == 1``, else a list of them in the order of
        the spec's ``in:``, each already converted to an accepted layout; ``args`` is a
        validated ``Args`` instance. Called for every node whenever a spec is validated,
        summarised or built, so it is pure arithmetic on shapes. Returns the :class:`Shape` of
        the output (a dimension below 1 is reported as a spec problem). Raises
        :class:`ShapeError` with a short reason when the input does not fit.
        """
        raise NotImplementedError

    def build(self, x: Any, args: ArgsT, *, device: torch.device | str | None = None,
              dtype: torch.dtype | None = None) -> nn.Module:
        """The module of one node, called only after :meth:`infer` accepted the same ``x`` and ``args``.

        Returns an ``nn.Module`` whose ``forward`` takes one tensor per input, in order, and
        returns one tensor of shape ``(B, *infer(x, args).dims())`` (archforge checks this on
        the meta device before allocating a network). Every parameter and buffer is created
        on ``device`` with ``dtype``. The module is installed at the node's path, so its
        parameters are named ``<node path>.<your names>``: keep the names short and stable,
        they are what checkpoints match on. A module that is one learned tensor subclasses
        :class:`ParameterNode`: its tensor is then named after the node itself (``cls_token``).
        """
        raise NotImplementedError

    def init_weights(self, module: nn.Module, x: Any, args: ArgsT) -> None:
        """Set ``module``'s initial values as the block's reference implementation does (optional).

        ``module`` is what :meth:`build` returned for the same ``x`` and ``args``. archforge
        calls this only under ``init: reference`` (a spec's default), right after ``build``,
        node by node in graph order; not when the network is built with ``device="meta"``
        (there are no values to set), nor when ``build`` loads ``weights``, which replace
        them all. Draw random values only from torch's global generator (which archforge
        seeds), in place and under ``torch.no_grad()`` (``nn.init`` functions do both).
        Change values only: the names, shapes, dtypes and devices of the parameters and
        buffers, and the tensors themselves, stay those ``build`` made; archforge checks
        this, and a violation or an exception is a fault of the plugin located at the node.
        The default, and ``init: pytorch``, keep what ``build`` made: override it where the
        reference differs (timm's transformers, for instance, draw every linear weight from a
        truncated normal of std 0.02 and zero its bias, where ``build`` leaves torch's
        kaiming-uniform defaults).
        """

    @classmethod
    def accepted_layouts(cls) -> tuple[Layout, ...]:
        """:attr:`layout` as a tuple of layouts, in the order conversions are tried."""
        if cls.layout == "any":
            return LAYOUTS
        if isinstance(cls.layout, str):
            return (cls.layout,)  # type: ignore[return-value]
        return tuple(cls.layout)

    @classmethod
    def contract_problems(cls) -> list[str]:
        """Ways in which this class breaks the contract (empty when it is fine).

        Never raises, whatever the class holds (an attribute of the wrong type, a metaclass
        whose attribute access raises, ...): each unreadable attribute is itself a problem.
        Each problem says what to change. The registry applies these checks when it loads a
        plugin, and ``archforge.testing.check_block`` asserts them.
        """
        from archforge.registry.block import contract_problems  # the checks belong to the registry

        return contract_problems(cls)


@hookspec
def archforge_blocks() -> Sequence[type[Block[Any]]] | None:
    """Return the :class:`Block` subclasses this plugin provides.

    Returns:
        A list (or tuple) of classes, not instances; ``None`` for none.

    Contract: each class passes :meth:`Block.contract_problems` and its constructor needs no
    argument. Each block is reachable by its short ``name`` and by ``<entry point>:<name>``.
    A built-in keeps its short name against any plugin (the plugin's block gets a warning
    and keeps its qualified name); a short name several plugins provide is an error naming
    their qualified names, raised only when a spec uses it. A class that breaks the
    contract, or whose constructor raises, is skipped with a warning; the plugin's other
    blocks still register.
    """


@hookspec
def archforge_datasets() -> Sequence[DatasetSource] | None:
    """Return the datasets a search can train on, as :class:`DatasetSource` objects.

    Returns:
        A list (or tuple) of ``DatasetSource(name, load, description="")``; ``None`` for none.

    Contract: ``load(**options)`` returns :class:`ImageData` (``images`` ``(N, C, H, W)`` float
    in ``[0, 1]``, ``labels`` ``(N,)`` int64 in ``[0, len(classes))``). It is called only when a
    search uses the dataset, so importing the plugin stays cheap, and it never downloads:
    the data ships with the plugin or is read from a path the user gives. Splitting,
    normalisation and augmentation are the search's. A name another plugin already provides
    is ignored with a warning (the first, in distribution order, keeps it).
    """


@hookspec
def archforge_metrics() -> Sequence[Metric] | None:
    """Return extra numbers a search measures on each trained candidate, as :class:`Metric` objects.

    Returns:
        A list (or tuple) of ``Metric(name, compute, goal="minimize", description="", options={})``;
        ``None`` for none.

    Contract: ``name`` is a letter then letters, digits or ``_``, and is none of the search's
    own measurements (``accuracy``, ``params``, ``flops``, ``latency_ms``, ...).
    ``compute(model, context) -> float`` is called once per trained model (once per training
    seed), after training, with the model in eval mode, on the trial's device, under
    ``torch.no_grad()``; ``context`` is a :class:`MetricContext` (``input_dims``: the
    per-sample input shape; ``device``). ``compute`` leaves the model as it found it and
    returns a finite number. The value (the median over seeds) is stored with the trial,
    shown as a column in rankings and reports, and may be named in a space's
    ``objectives:`` (``goal``, ``"minimize"`` or ``"maximize"``, is its direction) and in its
    constraints. A ``compute`` that raises, or returns anything but a finite number, fails
    that candidate with a message naming the metric and the plugin; the search goes on.
    ``options`` are the metric's own settings, for the plugin's use.
    """


__all__ = [
    "FAMILIES", "LAYOUTS", "PROJECT", "Block", "BlockArgs", "DatasetSource", "ImageData", "Layout", "MapToTokens", "Metric",
    "MetricContext", "ParameterNode", "Shape", "ShapeError", "TokensToMap", "archforge_blocks", "archforge_datasets",
    "archforge_metrics", "hookimpl", "hookspec",
]
