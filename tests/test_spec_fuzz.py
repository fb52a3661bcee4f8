"""Property: whatever text reaches ``parse_spec``/``load_spec`` + ``validate``, the only exception is a SpecError.

Valid seed specs are mutated the ways people and tools break YAML: keys deleted or
misspelt, values of the wrong type (strings for ints, lists for mappings, huge or
negative numbers, junk expressions), references and block names renamed, list items
swapped or duplicated (cycles, forward references, duplicate ids), the text truncated,
random characters and bytes inserted, lines duplicated (duplicate keys) or re-indented,
YAML tags injected. Every SpecError must also be a proper diagnostic: a location and a
one-line message. An injected ``!!python/object/apply`` must never run.

``ARCHFORGE_FUZZ_EXAMPLES`` scales the number of examples (default: about 300 in all).
"""

from __future__ import annotations

import copy
import importlib
import os
import re
import tempfile
import warnings
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import archforge
from archforge import Location, SpecError, SpecWarning

ROOT = Path(__file__).resolve().parents[1]
SCALE = float(os.environ.get("ARCHFORGE_FUZZ_EXAMPLES", "1"))
_WORKDIR = tempfile.TemporaryDirectory(prefix="archforge-fuzz-")
SENTINEL = Path(_WORKDIR.name) / "pwned"  # created only if a YAML tag could call Python


def fuzz_settings(examples: int):
    return settings(
        max_examples=max(1, int(examples * SCALE)),
        deadline=None,
        database=None,  # leave nothing behind in the checkout
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )


# --------------------------------------------------------------------------- seeds

GRAPH_SEED = """\
archforge: 1
name: seed_graph
description: defines with their own params, several inputs, repeat, merges, $param as a block
input: {shape: [3, 16, 16]}
params: {width: 8, depth: 2, kind: conv}
define:
  branch:
    params: {c: 8, k: 3}
    nodes:
      - {id: a, block: $kind, args: {channels: $c, kernel: $k}}
  pair:
    params: {c: 8}
    inputs: [left, right]
    nodes:
      - {id: l, block: branch, in: left, args: {c: $c}}
      - {id: r, block: branch, in: right, args: {c: $c, k: 5}}
      - {id: cat, block: concat, in: [l, r]}
      - {id: mix, block: conv, args: {channels: $c, kernel: 1}}
    output: mix
nodes:
  - {id: stem, block: conv, args: {channels: $width}}
  - {id: body, block: branch, repeat: $depth, args: {c: $width}}
  - {id: joined, block: pair, in: [stem, body], args: {c: "${width * 2}"}}
  - {id: skip, block: conv, in: stem, args: {channels: "${width * 2}", kernel: 1, act: none}}
  - {id: sum, block: add, in: [joined, skip]}
  - {id: down, block: pool, args: {kernel: 2}}
  - {id: squeeze, block: global_pool}
  - {id: excite, block: linear, args: {features: "${width * 2}"}}
  - {id: gated, block: mul, in: [down, excite], args: {gate: sigmoid}}
  - {id: head, block: classifier, args: {classes: 10, dropout: 0.1}}
output: head
"""

TOKENS_SEED = """\
archforge: 1
name: seed_tokens
input: {shape: [3, 32, 32]}
params: {dim: 16, patch: 4}
define:
  mlp_block:
    params: {dim: 16, ratio: 2}
    nodes:
      - {id: norm, block: layer_norm}
      - {id: fc1, block: linear, args: {features: "${dim * ratio}"}}
      - {id: act, block: act, args: {fn: gelu}}
      - {id: fc2, block: linear, args: {features: $dim}}
      - {id: res, block: add, in: [input, fc2]}
nodes:
  - {id: embed, block: patch_embed, args: {patch: $patch, dim: $dim}}
  - {id: blocks, block: mlp_block, repeat: 2, args: {dim: $dim}}
  - {id: norm, block: layer_norm}
  - {id: grid, block: to_map}
  - {id: conv, block: conv, args: {channels: $dim, stride: 2}}
  - {id: flat, block: flatten}
  - {id: head, block: linear, args: {features: 10}}
"""

BLOCK_STYLE_SEED = """\
archforge: 1
name: seed_anchors
input:
  shape: [1, 28, 28]
params:
  width: 4
  deep: "${width >= 4}"
nodes:
  - id: c1
    block: conv
    args: &conv_args
      channels: $width
      kernel: 3
      act: relu
  - id: c2
    block: conv
    args:
      <<: *conv_args
      kernel: 5
  - id: p
    block: pool
    args: {mode: avg, kernel: 2, stride: 2}
  - id: extra
    block: conv
    repeat: "${2 if deep else 0}"
    args: {channels: "${width * 2}", padding: 1, groups: 1}
  - {id: d, block: dropout, args: {p: 0.1}}
  - {id: keep, block: identity}
  - {id: h, block: classifier, args: {classes: 3, pool: max}}
"""

SEEDS = [
    (ROOT / "archforge" / "zoo" / "models" / "resnet_tiny.yaml").read_text(),
    GRAPH_SEED,
    TOKENS_SEED,
    BLOCK_STYLE_SEED,
]
SEED_DATA = [yaml.safe_load(text) for text in SEEDS]

NAMES = sorted({
    "input", "stem", "stage1", "down2", "head", "conv1", "conv2", "sum", "relu", "shortcut", "basic", "down", "branch", "pair",
    "left", "right", "mix", "body", "joined", "skip", "embed", "blocks", "mlp", "norm", "fc1", "fc2", "c1", "c2", "keep",
    "conv", "add", "concat", "mul", "pool", "linear", "identity", "classifier", "act", "global_pool", "patch_embed",
    "layer_norm", "batch_norm", "to_map", "to_tokens", "flatten", "dropout", "gpsa2", "forward", "train",
})
SPECIAL_STRINGS = [
    "$width", "$channels", "$nope", "$", "${", "${}", "${width * 2}", "${1/0}", "${2 ** 10 ** 10}", "${10 ** 400}",
    "${(-8) ** 0.5}", "${__import__('os').system('true')}", "${().__class__.__bases__}", "${open('/etc/passwd')}",
    "${[1] * 10}", "${'a' + 'b'}", "${round(5, -10 ** 9)}", "${width if width else}", "${lambda: 1}", "${x[0]}",
    "${float('nan')}", "${int('9' * 5000)}", "${max()}", "${sqrt(-1)}", "${log2(0)}", "${[[1, 2], [3]]}",
    "same", "depthwise", "none", "token", "avg", "max", "relu", "gelu", "", " ", "\t", "\n", "x" * 300, "1e309", "-0",
    "NaN", "~", "null", "yes", "on", "0x10", "0o17", "1_000", "2001-12-14", "'", '"', "{", "[", "&a", "*a", "!x", "%",
    "@", "`", "#", "--- ", "...", "<<", "é", "\u202e", "\ufeff", "\x00", "\x85", "\u2028",
]
TAGS = [
    f'!!python/object/apply:os.makedirs ["{SENTINEL}"]',
    f"!!python/object/apply:os.system ['mkdir {SENTINEL}']",
    "!!python/name:os.system",
    "!!python/object/new:builtins.dict []",
    "!!python/tuple [1, 2]",
    "!!python/module:os",
    "!custom",
    "!custom {a: 1}",
    "!!set {a, b}",
    "!!omap [a: 1]",
    "!!binary aGVsbG8=",
    "!!timestamp 2001-12-14",
    "!!str",
    "!!int",
    "!!float",
    "!!bool",
    "!!null",
    "!!map",
    "!!seq",
    "!!merge",
    "!<tag:yaml.org,2002:python/object/apply:os.system> [ls]",
    "!<tag:example.com,2000:x>",
    "&anchor",
    "*undefined_alias",
    "<<: *undefined_alias",
]

text_chars = st.characters(blacklist_categories=("Cs",))
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-3, max_value=70),
    st.integers(),
    st.sampled_from([0, -1, -(2**63), 2**63, 10**30, 2**1000, 10_001, 100_000]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.5, 1.0, 2.0, -1.5, 1e300]),
    st.text(text_chars, max_size=12),
    st.sampled_from(NAMES),
    st.sampled_from(SPECIAL_STRINGS),
)
junk = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(["id", "block", "args", "in", "repeat", "nodes", "params", "channels", "shape"]),
                                  st.text(text_chars, max_size=6)), inner, max_size=4),
    ),
    max_leaves=10,
)


# --------------------------------------------------------------------------- tree mutations

def _paths(tree, path=()):
    yield path
    if isinstance(tree, dict):
        for key, value in tree.items():
            yield from _paths(value, path + (key,))
    elif isinstance(tree, list):
        for i, value in enumerate(tree):
            yield from _paths(value, path + (i,))


def _get(tree, path):
    for part in path:
        tree = tree[part]
    return tree


def _ids(tree):
    return [value for path in _paths(tree) if path and path[-1] == "id" and isinstance(value := _get(tree, path), str)]


def _corrupt_string(draw, value: str, tree) -> str:
    how = draw(st.sampled_from(["typo", "drop", "other", "param", "case", "suffix"]))
    if how == "typo":
        return value + draw(st.sampled_from(["2", "s", "_", "x", "-", ".", " "]))
    if how == "drop" and value:
        i = draw(st.integers(0, len(value) - 1))
        return value[:i] + value[i + 1:]
    if how == "other":
        return draw(st.sampled_from(_ids(tree) + NAMES))
    if how == "param":
        return "$" + value.lstrip("$")
    if how == "case":
        return value.upper()
    return value + "[0]"


@st.composite
def mutated_tree(draw):
    data = copy.deepcopy(draw(st.sampled_from(SEED_DATA)))
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in _paths(data) if p]
        if not paths:
            break
        op = draw(st.sampled_from(["delete", "replace", "rename_key", "corrupt_string", "swap", "duplicate", "rewire", "reblock"]))
        path = draw(st.sampled_from(paths))
        parent, last = _get(data, path[:-1]), path[-1]
        if op == "delete":
            del parent[last]
        elif op == "replace":
            parent[last] = draw(junk)
        elif op == "rename_key" and isinstance(parent, dict):
            value = parent.pop(last)
            parent[_corrupt_string(draw, str(last), data)] = value
        elif op == "corrupt_string":
            strings = [p for p in paths if isinstance(_get(data, p), str)]
            if strings:
                target = draw(st.sampled_from(strings))
                _get(data, target[:-1])[target[-1]] = _corrupt_string(draw, _get(data, target), data)
        elif op in ("swap", "duplicate"):
            lists = [p for p in _paths(data) if isinstance(_get(data, p), list) and _get(data, p)]
            if lists:
                items = _get(data, draw(st.sampled_from(lists)))
                i, j = draw(st.integers(0, len(items) - 1)), draw(st.integers(0, len(items) - 1))
                if op == "swap":
                    items[i], items[j] = items[j], items[i]
                else:
                    items.insert(j, copy.deepcopy(items[i]))
        elif op == "rewire":
            nodes = [p for p in _paths(data) if isinstance(_get(data, p), dict) and "block" in _get(data, p)]
            if nodes:
                node = _get(data, draw(st.sampled_from(nodes)))
                choices = _ids(data) + ["input", "left", "right", "nope"]
                node["in"] = draw(st.one_of(st.sampled_from(choices), st.lists(st.sampled_from(choices), max_size=3)))
        elif op == "reblock":
            nodes = [p for p in _paths(data) if isinstance(_get(data, p), dict) and "block" in _get(data, p)]
            if nodes:
                node = _get(data, draw(st.sampled_from(nodes)))
                defines = list(data.get("define", {}) or {}) if isinstance(data.get("define"), dict) else []
                node["block"] = draw(st.sampled_from(NAMES + defines + ["$kind", "$width", "$nope"]))
    return data


def _dump(data) -> str:
    try:
        return yaml.safe_dump(data, sort_keys=False, default_flow_style=None, allow_unicode=True, width=100)
    except yaml.YAMLError:  # e.g. a key PyYAML cannot represent: fall back to something still YAML-ish
        return repr(data)


# --------------------------------------------------------------------------- text mutations

insert_text = st.one_of(
    st.text(text_chars, min_size=1, max_size=8),
    st.sampled_from(["\t", "  ", "\n", "\r\n", ":", ": ", "- ", "{", "}", "[", "]", ",", "#", "'", '"', "&a ", "*a", "? ",
                     "|", ">", "%YAML 1.1\n", "---\n", "...\n", "\x00", "\x07", "\x1b", "\ufeff", "\u2028", "\x85", "\\"]),
    st.binary(min_size=1, max_size=8).map(lambda b: b.decode("latin-1")),
    st.sampled_from(TAGS).map(lambda t: f" {t} "),
)


@st.composite
def mutated_text(draw, base=None):
    text = base if base is not None else draw(st.sampled_from(SEEDS))
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["truncate", "insert", "duplicate_line", "delete_line", "tag", "number", "indent", "swap_lines", "word"]))
        lines = text.split("\n")
        if op == "truncate":
            text = text[: draw(st.integers(0, len(text)))]
        elif op == "insert":
            at = draw(st.integers(0, len(text)))
            text = text[:at] + draw(insert_text) + text[at:]
        elif op in ("duplicate_line", "delete_line", "indent", "swap_lines") and lines:
            i = draw(st.integers(0, len(lines) - 1))
            if op == "duplicate_line":
                lines.insert(i, lines[i])
            elif op == "delete_line":
                del lines[i]
            elif op == "indent":
                lines[i] = draw(st.sampled_from(["", " ", "   ", "\t", "      "])) + lines[i].lstrip(" ")
            else:
                j = draw(st.integers(0, len(lines) - 1))
                lines[i], lines[j] = lines[j], lines[i]
            text = "\n".join(lines)
        elif op == "tag":
            spots = [m.end() for m in re.finditer(r": |- |\[|, ", text)]
            if spots:
                at = draw(st.sampled_from(spots))
                text = text[:at] + draw(st.sampled_from(TAGS)) + " " + text[at:]
        elif op == "word":  # misspell a name: a key, an id, a reference, a block, a param
            spans = [m.span() for m in re.finditer(r"[A-Za-z_][A-Za-z0-9_]*", text)]
            if spans:
                start, end = draw(st.sampled_from(spans))
                word = text[start:end]
                text = text[:start] + draw(st.sampled_from([word + "x", word[:-1], word.upper(), "_" + word])) + text[end:]
        elif op == "number":
            spans = [m.span() for m in re.finditer(r"\d+", text)]
            if spans:
                start, end = draw(st.sampled_from(spans))
                text = text[:start] + str(draw(st.sampled_from([0, -1, -7, 10**6, 10**30, 2**100]))) + text[end:]
    return text


# --------------------------------------------------------------------------- the property

def check_only_spec_errors(text: str, file: str = "fuzz.yaml") -> None:
    """Parse and validate ``text``: success and SpecError are fine, anything else fails the test."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SpecWarning)
        try:
            archforge.validate(archforge.parse_spec(text, file=file))
        except SpecError as exc:
            assert_diagnostic(exc, file)
    assert not SENTINEL.exists(), "a YAML tag in a spec executed Python code"


def assert_diagnostic(exc: SpecError, file: str) -> None:
    assert isinstance(exc.location, Location), f"SpecError without a location: {exc}"
    assert exc.location.file == file and exc.location.line >= 1 and exc.location.column >= 1, exc.location
    assert exc.message and len(str(exc).splitlines()) == 1, f"not a one-line diagnostic: {str(exc)!r}"
    assert exc.node is None or isinstance(exc.node, str)


@fuzz_settings(130)
@given(data=mutated_tree())
def test_tree_mutations_raise_only_spec_errors(data):
    check_only_spec_errors(_dump(data))


@fuzz_settings(130)
@given(text=mutated_text())
def test_text_mutations_raise_only_spec_errors(text):
    check_only_spec_errors(text)


@fuzz_settings(40)
@given(data=st.data())
def test_tree_then_text_mutations_raise_only_spec_errors(data):
    text = data.draw(mutated_text(base=_dump(data.draw(mutated_tree()))))
    check_only_spec_errors(text)


@fuzz_settings(30)
@given(seed=st.sampled_from(SEEDS), at=st.integers(0, 10**6), junk_bytes=st.binary(min_size=1, max_size=16))
def test_random_bytes_in_a_spec_file_raise_only_spec_errors(seed, at, junk_bytes):
    raw = seed.encode("utf-8")
    at %= len(raw) + 1
    path = Path(_WORKDIR.name) / "bytes.yaml"
    path.write_bytes(raw[:at] + junk_bytes + raw[at:])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SpecWarning)
        try:
            archforge.validate(archforge.load_spec(path))
        except SpecError as exc:
            assert_diagnostic(exc, str(path))


@pytest.mark.parametrize("text", SEEDS, ids=["resnet_tiny", "graph", "tokens", "block_style"])
def test_seeds_are_valid(text):
    """The mutations start from specs that validate, so that they reach every stage."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", SpecWarning)
        graph = archforge.validate(archforge.parse_spec(text))
    assert graph.nodes


def test_the_property_catches_a_crash(monkeypatch):
    """A KeyError escaping from deep inside validation fails the property (the fuzz would find it)."""
    expand = importlib.import_module("archforge.graph.expand")  # the module, not the function of that name

    def broken(*args, **kwargs):
        raise KeyError("simulated bug")

    monkeypatch.setattr(expand, "did_you_mean", broken)
    text = SEEDS[1].replace("in: [stem, body]", "in: [stem, bodyy]")
    with pytest.raises(KeyError):
        check_only_spec_errors(text)
