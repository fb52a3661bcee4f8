"""How one candidate is trained and measured: :class:`TrainConfig`, the ``train:`` mapping of a search.

The same model is the ``train:`` key of a space's ``search:`` section, the ``train=`` argument
of :func:`archforge.search`, and the ``config`` argument of
:func:`archforge.search.evaluate.evaluate`. It is strict, as the rest of the search section:
``true`` is not an integer, ``'4'`` is not a number, NaN and infinity are no setting, and an
unknown key (``batchsize``) is an error with a suggestion.

Within a search, ``epochs`` and ``seed`` come from the ``search:`` section itself
(``epochs``, ``seeds``); the search sets them on each trial's copy of this config.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, PlainValidator, WithJsonSchema

from archforge.search import limits
from archforge.spec.schema import InitMode

#: A torch device as settings write it: ``cpu``, ``cuda``, ``cuda:1``, ``mps``.
DEVICE_PATTERN = r"^[a-z]+(:[0-9]{1,3})?$"
_EXPONENT = re.compile(r"[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+")


def _exponent_float(value: Any) -> Any:
    # YAML 1.1 (PyYAML) reads 2e5 and 1e-3 as strings; YAML 1.2 and every user read them as numbers.
    if isinstance(value, str) and _EXPONENT.fullmatch(value):
        return float(value.replace("_", ""))
    return value


def at_most(bound: str) -> AfterValidator:
    """A validator refusing values above ``archforge.search.limits.<bound>``, read when checked."""

    def check(value: Any) -> Any:
        high = getattr(limits, bound)
        if value is not None and value > high:
            raise ValueError(f"at most {high:,} (the bound is {limits.bound_text(bound)}; raise it to allow more)")
        return value

    return AfterValidator(check)


#: A finite number; ``2e5`` written without a dot counts as one.
Number = Annotated[float, BeforeValidator(_exponent_float)]


def _learning_rate(value: Any) -> float | str:
    # One check and one message for both forms (a union would report each branch's failure).
    value = _exponent_float(value)
    if value == "auto":
        return value
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise ValueError("input should be a valid number, or 'auto'")
    if not math.isfinite(value):
        raise ValueError("input should be a finite number")
    if value <= 0:
        raise ValueError("input should be greater than 0")
    return float(value)


#: ``train.lr``: a positive finite number, or ``auto`` (a range test per candidate, archforge.search.lr_range).
LearningRate = Annotated[float | Literal["auto"], PlainValidator(_learning_rate),
                         WithJsonSchema({"anyOf": [{"type": "number", "exclusiveMinimum": 0}, {"const": "auto"}]})]


class Strict(BaseModel):
    """Base of the search settings: a YAML boolean is not an integer, a quoted '4' is not a number, no NaN."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class AugmentSettings(Strict):
    """``train.augment`` as a mapping: random shifts of up to ``crop_padding`` pixels, optional mirroring."""

    crop_padding: Annotated[int, at_most("MAX_CROP_PADDING")] = Field(2, ge=0, description="Largest shift in pixels; 0 disables.")
    hflip: bool = Field(False, description="Mirror half the images.")


class TrainConfig(Strict):
    """How one candidate is trained (AdamW, warm-up then cosine decay, label smoothing) and measured."""

    epochs: Annotated[int, at_most("MAX_EPOCHS")] = Field(3, gt=0, description="Training epochs (a search sets it from search.epochs).")
    batch_size: Annotated[int, at_most("MAX_BATCH")] = Field(128, gt=0)
    lr: LearningRate = Field(2e-3, description=(
        "Peak learning rate of AdamW, or auto: a learning-rate range test per candidate and seed picks it "
        "(archforge.search.lr_range; the rate found is stored with each seed's result)."))
    weight_decay: Number = Field(0.05, ge=0)
    warmup_epochs: Number = Field(0.5, ge=0, description="Linear warm-up, in epochs (fractions allowed).")
    label_smoothing: Number = Field(0.1, ge=0, lt=1)
    augment: bool | AugmentSettings = Field(True, description="true: shifts of 1/8 of the image side; false: none; or a mapping.")
    seed: int = Field(0, ge=0, lt=2**32, description="Seed of the weights, data order and augmentation (a search sets it per seed).")
    init: InitMode | None = Field(None, description=(
        "Initial weights: reference (as each block's reference implementation initialises it), pytorch (torch's layer "
        "defaults), or none: each candidate spec's own init key (reference unless the space says otherwise)."))
    device: str = Field("cpu", pattern=DEVICE_PATTERN, description="cpu, cuda, cuda:1, mps")
    amp: bool = Field(True, description="bf16 autocast on CUDA (fp16 with loss scaling on GPUs without bf16); ignored on the CPU.")
    channels_last: bool | Literal["auto"] = Field("auto", description=(
        "Images and weights in channels-last memory order; auto: on CUDA (tensor cores), not on the CPU."))
    threads: Annotated[int, at_most("MAX_THREADS")] | None = Field(None, gt=0, description="torch threads for the trial (restored after).")
    latency_batch: Annotated[int, at_most("MAX_BATCH")] = Field(1, gt=0, description="Batch of the latency measurement.")
    latency_repeats: Annotated[int, at_most("MAX_LATENCY_REPEATS")] = Field(
        20, ge=0, description="Least timed forward passes of the latency measurement; 0 skips it.")


#: Fields that change how fast a trial runs, not what it computes: not part of the result cache key.
NEUTRAL_FIELDS = frozenset({"seed", "threads", "device", "channels_last", "latency_batch", "latency_repeats"})
