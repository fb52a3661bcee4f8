"""The flags of ``archforge search``: each one a setting of the ``search:`` section, turned into overrides.

A flag is named after the :class:`~archforge.search.settings.SearchSettings` field it sets
(``--val-fraction`` sets ``val_fraction``); nested sections have a flag per field
(``--max-params``, ``--proxy-sample``, ``--retrain-top``) or take ``KEY=VALUE`` pairs (``--train lr=0.01
--train batch_size=64``, ``--evolution population=16``). :func:`search_overrides` turns
the flags given into the keyword arguments of :func:`archforge.search`, which are the
overrides of :meth:`SearchSettings.merged`: the command line, the Python API and the YAML
section build one and the same settings object. A nested section given on the command
line is passed whole (the space's values, then the flags'), so that it means the same
whether the receiver replaces or updates that section.
"""

from __future__ import annotations

import argparse
from typing import Any, Callable

from archforge.cli.common import fraction, int_range, key_value, non_negative_int, positive_int, positive_number, seed_int
from archforge.errors import SettingError, did_you_mean

#: Flags that set the field of the same name.
SCALAR_FIELDS = ("dataset", "limit", "val_fraction", "strategy", "budget", "epochs", "seeds", "objectives", "pruner",
                 "workers", "devices", "executor", "seed", "name")
#: Flags of the ``ray:`` section: flag → field.
RAY_FLAGS = {"address": "address", "cpus_per_trial": "cpus_per_trial", "gpus_per_trial": "gpus_per_trial"}
CONSTRAINT_FIELDS = ("max_params", "min_params", "max_flops", "min_flops")
#: Flags of the ``oneshot:`` section (strategy oneshot only): flag's dest → field.
ONESHOT_FLAGS = {"retrain_top": "retrain_top", "oneshot_epochs": "epochs", "sampling": "sampling",
                 "calibration_batches": "calibration_batches", "oneshot_paths": "paths"}
#: Shorthand flags of ``--train KEY=VALUE``.
TRAIN_SHORTHANDS = ("batch_size", "lr", "init", "device")


def add_search_flags(parser: argparse.ArgumentParser) -> None:
    """Add one flag per search setting to the ``search`` command's parser.

    Their choices and keys come from the search settings (pydantic models): the ``search``
    command adds these flags when it is the command given (:meth:`~archforge.cli.common.Parser.defer`).
    """
    from archforge.search import limits
    from archforge.search.settings import OBJECTIVES, PRUNERS, STRATEGIES, EvolutionSettings
    from archforge.search.training import TrainConfig

    g = parser.add_argument_group("what to search (the search: section's keys of the same name)")
    g.add_argument("--strategy", choices=list(STRATEGIES), help="how candidates are chosen")
    g.add_argument("--budget", type=positive_int, metavar="N", help="candidates to evaluate (default: the whole grid, else 20)")
    g.add_argument("--objectives", metavar="LIST",
                   help=f"comma-separated, from: {', '.join(OBJECTIVES)}, or an installed plugin metric (archforge plugins)")
    for name in CONSTRAINT_FIELDS:
        bound, what = name.split("_")
        g.add_argument(f"--{name.replace('_', '-')}", type=positive_number, metavar="N",
                       help=f"constraints.{name}: reject candidates with {'more' if bound == 'max' else 'fewer'} {what}, before training")
    g.add_argument("--pruner", choices=[*PRUNERS, "sh", "none"], help="multi-fidelity over epochs (none: switch the space's off)")
    g.add_argument("--proxy", choices=["synflow", "naswot", "none"], help="zero-cost pre-filter: score candidates, train the best")
    g.add_argument("--proxy-sample", type=positive_int, metavar="N", help="proxy.sample: candidates the proxy scores (default 64)")
    g.add_argument("--proxy-keep", type=fraction, metavar="F", help="proxy.keep: fraction of them that is trained (default 0.25)")
    g.add_argument("--evolution", type=section_pair("evolution", EvolutionSettings), action="append", metavar="KEY=VALUE",
                   help="a key of evolution: population or sample (repeatable)")
    g.add_argument("--retrain-top", type=non_negative_int, metavar="K",
                   help="oneshot.retrain_top (--strategy oneshot): train the best K of the one-shot ranking stand-alone (default 0)")
    g.add_argument("--oneshot-epochs", type=positive_int, metavar="N",
                   help="oneshot.epochs: epochs the supernet trains (default: --epochs)")
    g.add_argument("--sampling", choices=["uniform", "fair"],
                   help="oneshot.sampling: paths per supernet step, one drawn uniformly (SPOS) or every value once (FairNAS, default)")
    g.add_argument("--calibration-batches", type=positive_int, metavar="N",
                   help="oneshot.calibration_batches: batches each path's BatchNorm statistics are re-estimated on (default 5)")
    g.add_argument("--oneshot-paths", dest="oneshot_paths", type=positive_int, metavar="N",
                   help="oneshot.paths: candidates the supernet holds and ranks (default 256; a seeded sample of a larger space)")
    g.add_argument("--seed", type=seed_int, help="seed of the samplers")
    g.add_argument("--param", type=key_value, action="append", metavar="NAME=VALUE",
                   help="give one of the space's params another value (repeatable), e.g. --param classes=2 for a 2-class dataset")

    g = parser.add_argument_group("training")
    g.add_argument("--dataset", help="mnist, digits, a plugin's dataset, an .npz or an image folder")
    g.add_argument("--limit", type=positive_int, metavar="N", help="use at most N images (train + validation)")
    g.add_argument("--val-fraction", type=fraction, metavar="F", help="share of the images held out for validation")
    g.add_argument("--epochs", type=positive_int, help="epochs per candidate")
    g.add_argument("--seeds", type=positive_int, metavar="N", help="train each candidate with N seeds (mean ± std)")
    g.add_argument("--train", type=section_pair("train", TrainConfig, exclude=("epochs", "seed")), action="append", metavar="KEY=VALUE",
                   help="a key of train: (repeatable), e.g. --train lr=0.01 --train batch_size=64 --train augment=false")
    g.add_argument("--batch-size", type=positive_int, metavar="N", help="the same as --train batch_size=N")
    g.add_argument("--lr", type=learning_rate, metavar="LR",
                   help="the same as --train lr=LR; auto: a learning-rate range test per candidate and seed picks it")
    g.add_argument("--init", choices=["reference", "pytorch"],
                   help="the same as --train init=…: initial weights as each block's reference implementation sets them, "
                        "or torch's layer defaults (default: each candidate spec's own init, reference unless it says otherwise)")
    g.add_argument("--device", help="the same as --train device=DEVICE: cpu, cuda, cuda:1, mps")

    g = parser.add_argument_group("where and how")
    g.add_argument("--name", "--study", dest="name", help="run name, which is the study's name in the storage (default: the space's name)")
    g.add_argument("--storage", metavar="URL", help="a PostgreSQL URL (postgresql://user@host/db: workers on other machines "
                   "join with archforge worker) or a .db file, anywhere (a space file's search.storage may only name a "
                   "place inside the working folder)")
    g.add_argument("--workers", type=int_range(1, limits.MAX_WORKERS), metavar="N", help="worker processes sharing the study (default 1)")
    g.add_argument("--devices", type=device_list, metavar="LIST",
                   help="spread the workers over these devices, one each unless --workers says more: cuda:0,cuda:1")
    g.add_argument("--executor", choices=["local", "ray"], help="run workers as local processes or Ray tasks")
    g.add_argument("--address", metavar="ADDRESS", help="ray.address: the Ray cluster to join (auto, ray://HOST:10001; "
                   "default: start a local one)")
    g.add_argument("--cpus-per-trial", type=positive_number, metavar="N", help="ray.cpus_per_trial: CPUs Ray reserves per trial")
    g.add_argument("--gpus-per-trial", type=non_negative_number, metavar="N",
                   help="ray.gpus_per_trial: GPUs Ray reserves per trial (0.5: two trials share one)")


def search_overrides(args: argparse.Namespace, settings: Any) -> dict[str, Any]:
    """The flags given, as keyword arguments of :func:`archforge.search` (``settings``: the space's own).

    Raises :class:`SettingError` for flags that contradict each other or the space.
    """
    _refuse_space_budget(args, settings)
    overrides: dict[str, Any] = {name: getattr(args, name) for name in SCALAR_FIELDS if getattr(args, name) is not None}
    constraints = {name: getattr(args, name) for name in CONSTRAINT_FIELDS if getattr(args, name) is not None}
    if constraints:
        overrides["constraints"] = {**settings.constraints.model_dump(exclude_none=True), **constraints}
    proxy = _proxy(args, settings)
    if proxy is not None:
        overrides["proxy"] = proxy
    train = dict(args.train or [])  # a key given twice: the last one wins, as with any repeated flag
    for name in TRAIN_SHORTHANDS:
        value = getattr(args, name)
        if value is not None:
            if name in train and train[name] != value:
                raise SettingError(f"--{name.replace('_', '-')} {value} and --train {name}={train[name]} disagree: give one")
            train[name] = value
    if train:
        overrides["train"] = {**settings.train.model_dump(exclude={"epochs", "seed"}), **train}
    if args.param:
        overrides["params"] = {**settings.params, **dict(args.param)}  # a name given twice: the last one wins
    ray = {field: getattr(args, flag) for flag, field in RAY_FLAGS.items() if getattr(args, flag) is not None}
    if ray:
        overrides["ray"] = {**settings.ray.model_dump(), **ray}
    evolution = dict(args.evolution or [])
    if evolution:
        overrides["evolution"] = {**settings.evolution.model_dump(), **evolution}
    oneshot = _oneshot(args, settings)
    if oneshot is not None:
        overrides["oneshot"] = oneshot
    return overrides


def _refuse_space_budget(args: argparse.Namespace, settings: Any) -> None:
    """``--strategy oneshot`` on a space whose ``search:`` section sets ``budget``: no flag can unset a setting, so say
    which one stands in the way (the settings' own message would ask for --retrain-top, given or not)."""
    if args.strategy == "oneshot" and settings.strategy != "oneshot" and settings.budget is not None and args.budget is None:
        raise SettingError(f"--strategy oneshot trains the best oneshot.retrain_top (--retrain-top K) of its ranking, and this "
                           f"space's search: section sets budget: {settings.budget}: remove budget from the space file, "
                           "or use another strategy")


def _oneshot(args: argparse.Namespace, settings: Any) -> dict[str, Any] | None:
    """The ``oneshot`` section the flags give (the space's, updated), ``None`` without one; refused unless the strategy is oneshot."""
    parts = {field: getattr(args, dest) for dest, field in ONESHOT_FLAGS.items() if getattr(args, dest, None) is not None}
    if not parts:
        return None
    strategy = args.strategy if args.strategy is not None else settings.strategy
    if strategy != "oneshot":
        given = ", ".join("--" + dest.replace("_", "-") for dest in ONESHOT_FLAGS if getattr(args, dest, None) is not None)
        now = strategy if isinstance(strategy, str) else type(strategy).__name__
        raise SettingError(f"{given} set{'s' if ',' not in given else ''} the one-shot supernet of strategy oneshot, and this "
                           f"search's strategy is {now}: add --strategy oneshot")
    return {**settings.oneshot.model_dump(), **parts}


def _proxy(args: argparse.Namespace, settings: Any) -> Any:
    parts = {key: value for key, value in (("sample", args.proxy_sample), ("keep", args.proxy_keep)) if value is not None}
    if args.proxy == "none":
        if parts:
            raise SettingError("--proxy none switches the proxy off: --proxy-sample and --proxy-keep have nothing to set")
        return "none"
    if args.proxy is None and not parts:
        return None
    if args.proxy is None and settings.proxy is None:
        raise SettingError("--proxy-sample and --proxy-keep set the proxy of the space, which has none: add --proxy synflow or naswot")
    base = settings.proxy.model_dump() if settings.proxy is not None and args.proxy in (None, settings.proxy.score) else {}
    return {**base, **({"score": args.proxy} if args.proxy is not None else {}), **parts}


def device_list(text: str) -> list[str]:
    """An argparse ``type=``: devices separated by commas (``cuda:0,cuda:1``); whether they exist is checked by the run."""
    import re

    from archforge.search.training import DEVICE_PATTERN

    devices = [d.strip() for d in text.split(",") if d.strip()]
    bad = next((d for d in devices if not re.fullmatch(DEVICE_PATTERN, d)), None)
    if not devices or bad is not None:
        raise argparse.ArgumentTypeError(f"{bad or text!r} is not a list of devices such as cuda:0,cuda:1 or cpu,cpu")
    return devices


def learning_rate(text: str) -> float | str:
    """An argparse ``type=``: a positive number, or ``auto`` (the range test of :mod:`archforge.search.lr_range`)."""
    if text.strip() == "auto":
        return "auto"
    try:
        return positive_number(text)
    except argparse.ArgumentTypeError as exc:
        raise argparse.ArgumentTypeError(f"{exc}, or 'auto'") from None


def non_negative_number(text: str) -> float:
    """An argparse ``type=``: a finite number, 0 or more."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number of 0 or more")
    return value


def section_pair(section: str, model: Any, exclude: tuple[str, ...] = ()) -> Callable[[str], tuple[str, Any]]:
    """An argparse ``type=``: ``KEY=VALUE`` where KEY is a field of ``model`` (a usage error with a suggestion otherwise)."""
    known = [name for name in model.model_fields if name not in exclude]

    def parse(text: str) -> tuple[str, Any]:
        key, value = key_value(text)
        if key in exclude:
            alternative = "--seeds" if key == "seed" else f"--{key}"
            raise argparse.ArgumentTypeError(f"a search sets each trial's {key}: use {alternative}")
        if key not in known:
            raise argparse.ArgumentTypeError(f"unknown {section} setting '{key}'{did_you_mean(key, known)}; the keys are {', '.join(known)}")
        return key, value

    parse.__name__ = f"{section} setting"
    return parse


__all__ = ["CONSTRAINT_FIELDS", "ONESHOT_FLAGS", "SCALAR_FIELDS", "add_search_flags", "search_overrides", "section_pair"]
