"""Hardening corpus for the spec language and the graph stage, organised by class of problem.

Every hostile input must end in a located :class:`SpecError` or a clean success. The
classes: (0) YAML merge keys follow the YAML merge rule whatever PyYAML's version;
(1) silently wrong values: a boolean is not a number, a string is not a number, and
YAML 1.1 oddities are refused with a hint; (2) ids that would break the generated
``forward``; (3) sizes that would overflow or exhaust memory, each bound tested just
under and just over; and, last, a plugin block that fails in any way the graph stage
can see. Each case carries a one-line reason. Line and column are those of the
offending text, counted by hand (line 1 is the first line of the spec).
"""

from __future__ import annotations

import builtins
import importlib
import keyword
import re
import textwrap
import warnings
from dataclasses import dataclass
from enum import Enum
from typing import Annotated, Any, Literal

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, Field, ValidationError, field_validator
from torch import nn

import archforge
import archforge.registry
import archforge.testing
from archforge import SpecError, SpecWarning
from archforge.graph import bounds
from archforge.graph.strict import strictness_problem
from archforge.spec import located_yaml
from archforge.spec import load as load_module
from archforge.spec.located_yaml import load_located

ANY = object()
expand_module = importlib.import_module("archforge.graph.expand")  # the package re-exports a function of that name


@dataclass
class Case:
    id: str
    reason: str
    text: str
    line: int
    column: int
    message: str | re.Pattern[str]
    node: object = ANY


def case(id: str, reason: str, text: str, line: int, column: int, message: str | re.Pattern[str], node: object = ANY) -> Case:
    return Case(id, reason, textwrap.dedent(text).lstrip("\n"), line, column, message, node)


def diagnose(text: str) -> SpecError:
    with warnings.catch_warnings():
        warnings.simplefilter("error", SpecWarning)
        with pytest.raises(SpecError) as info:
            archforge.validate(archforge.parse_spec(text, file="spec.yaml"))
    return info.value


def compile_text(text: str) -> archforge.Graph:
    with warnings.catch_warnings():
        warnings.simplefilter("error", SpecWarning)
        return archforge.validate(archforge.parse_spec(textwrap.dedent(text).lstrip("\n"), file="spec.yaml"))


def check(c: Case) -> None:
    error = diagnose(c.text)
    assert error.location is not None and error.location.file == "spec.yaml", error
    assert (error.location.line, error.location.column) == (c.line, c.column), f"{c.reason}: {error}"
    if isinstance(c.message, re.Pattern):
        assert c.message.search(error.message), error.message
    else:
        assert c.message in error.message, error.message
    if c.node is not ANY:
        assert error.node == c.node, error
    assert str(error) == f"spec.yaml:{c.line}:{c.column}: {error.message}"
    assert len(str(error).splitlines()) == 1


# ====================================================================== class 0: YAML merge keys

MERGES = [
    # (reason, YAML, the tree the YAML merge rule gives)
    ("the first mapping of a merge list wins over later ones",
     "b: &b {kernel: 3, x: 1}\na: {<<: [{kernel: 1}, *b]}\n",
     {"b": {"kernel": 3, "x": 1}, "a": {"kernel": 1, "x": 1}}),
    ("the first mapping wins even when it is the alias",
     "b: &b {kernel: 3, x: 1}\na: {<<: [*b, {kernel: 1, y: 2}]}\n",
     {"b": {"kernel": 3, "x": 1}, "a": {"kernel": 3, "x": 1, "y": 2}}),
    ("a written key wins over every merged one",
     "b: &b {kernel: 3}\nc: &c {kernel: 4}\na: {<<: [*b, *c], kernel: 5}\n",
     {"b": {"kernel": 3}, "c": {"kernel": 4}, "a": {"kernel": 5}}),
    ("a written key wins even when written before the merge",
     "b: &b {kernel: 3}\na: {kernel: 5, <<: *b}\n",
     {"b": {"kernel": 3}, "a": {"kernel": 5}}),
    ("merges inside a merged mapping apply first (recursively)",
     "b: &b {k: 1, j: 1}\nc: &c {<<: *b, k: 2}\na: {<<: [*c, {k: 3, j: 3, i: 3}]}\n",
     {"b": {"k": 1, "j": 1}, "c": {"k": 2, "j": 1}, "a": {"k": 2, "j": 1, "i": 3}}),
    ("a merge of a single mapping, not a list",
     "b: &b {k: 1}\na: {<<: *b}\n",
     {"b": {"k": 1}, "a": {"k": 1}}),
    ("a '=' key is the string '=' as safe_load reads it",
     "a: {'k': 1, =: 2}\n",
     {"a": {"k": 1, "=": 2}}),
]


@pytest.mark.parametrize("reason, text, expected", MERGES, ids=[m[0] for m in MERGES])
def test_merge_rule(reason, text, expected):
    assert load_located(text).data == expected, reason


def test_merged_params_come_first_so_written_params_can_use_them():
    graph = compile_text("""
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        params:
          <<: {width: 4}
          wide: "${width * 2}"
        nodes:
          - {id: a, block: conv, args: {channels: $wide}}
        """)
    assert graph.nodes["a"].args.channels == 8


def test_a_merged_value_is_located_at_its_anchor():
    error = diagnose(textwrap.dedent("""\
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        nodes:
          - id: a
            block: conv
            args: &base
              channels: 0
          - id: b
            block: conv
            args: {<<: *base, kernel: 1}
        """))
    assert (error.location.line, error.location.column) == (8, 17), error  # the first node already fails there


def test_a_merged_key_is_located_at_its_anchor_and_names_the_node_that_merged_it():
    error = diagnose(textwrap.dedent("""\
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        nodes:
          - id: a
            block: conv
            args: &base {channels: 4}
          - id: b
            block: linear
            args: {<<: *base, features: 4}
        """))
    assert (error.location.line, error.location.column) == (7, 18), error
    assert error.message.startswith("unknown key 'channels' in node 'b'") and error.node == "b"


MERGE_ERRORS = [
    case("merge-of-a-scalar-in-a-list", "a merge list may hold mappings only", """
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        params: {<<: [{w: 1}, 3]}
        nodes:
          - {id: a, block: identity}
        """, 4, 10, "'<<' can only merge a mapping or a list of mappings", None),
    case("two-merge-keys", "two '<<' in one mapping are a duplicate key; one list says the order", """
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        params: {<<: {w: 1}, <<: {v: 2}}
        nodes:
          - {id: a, block: identity}
        """, 4, 22, "duplicate key '<<'", None),
    case("written-key-twice-after-a-merge", "a merge never excuses a duplicate written key", """
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        params:
          <<: {w: 1}
          v: 2
          v: 3
        nodes:
          - {id: a, block: identity}
        """, 7, 3, "duplicate key 'v'", None),
    case("duplicate-key-inside-a-merged-mapping", "the merged mapping's own keys are checked too", """
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        params: {<<: {w: 1, w: 2}}
        nodes:
          - {id: a, block: identity}
        """, 4, 21, "duplicate key 'w'", None),
    case("merged-key-not-a-name", "a key of a merged mapping read as a number is refused where it is written", """
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        params: {<<: {1: 2}}
        nodes:
          - {id: a, block: identity}
        """, 4, 15, "mapping key '1' is read as a number, not a name: quote it", None),
]


@pytest.mark.parametrize("c", MERGE_ERRORS, ids=[c.id for c in MERGE_ERRORS])
def test_merge_errors(c: Case):
    check(c)


# ====================================================================== class 1: silently wrong values

SILENT_VALUES = [
    # ---------------------------------------------------------------- block args: booleans are not numbers
    case("bool-for-int-arg", "lax pydantic reads true as 1 channel", """
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        nodes:
          - id: a
            block: conv
            args:
              channels: true
        """, 8, 17, "nodes[0].args.channels: expected an integer, not a boolean (got true) in node 'a'", "a"),
    case("bool-expression-for-int-arg", "an expression that yields a boolean is no more a number", """
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        params: {w: 4}
        nodes:
          - id: a
            block: conv
            args:
              channels: "${w > 1}"
        """, 9, 17, "expected an integer, not a boolean (got true) in node 'a'", "a"),
    case("bool-for-float-arg", "dropout p: true would be p = 1.0", """
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        nodes:
          - id: a
            block: dropout
            args:
              p: false
        """, 8, 10, "nodes[0].args.p: expected a number, not a boolean (got false) in node 'a'", "a"),
    case("bool-for-int-or-literal", "a union with a string literal must not let true through as 1", """
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        nodes:
          - id: a
            block: conv
            args:
              channels: 4
              padding: true
        """, 9, 16, "expected an integer or 'same', not a boolean (got true)", "a"),
    case("number-string-for-int-or-literal", "a union with a string literal must not let '4' through as 4 either", """
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        nodes:
          - id: a
            block: conv
            args:
              channels: 4
              padding: '1'
        """, 9, 16, "expected an integer or 'same' (got '1') in node 'a': write 1 without quotes", "a"),
    case("bool-for-int-literal", "Literal[1, 2] accepts true as 1 in lax mode", """
        archforge: 1
        name: t
        input: {shape: [8, 8, 8]}
        nodes:
          - id: a
            block: bottleneck_attn
            args:
              stride: true
        """, 8, 15, "expected 1 or 2, not a boolean (got true)", "a"),
    case("bool-inside-a-tuple", "list items are checked against the tuple's item types", """
        archforge: 1
        name: t
        input: {shape: [3, 32, 32]}
        nodes:
          - id: a
            block: stem
            args:
              variant: deep
              widths: [16, true]
        """, 9, 20, "nodes[0].args.widths[1]: expected an integer, not a boolean (got true)", "a"),
    case("bool-in-define-arg-reaching-a-block", "a define param carries the boolean to the block, located at the block arg", """
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        define:
          unit:
            params: {c: 4}
            nodes:
              - {id: conv, block: conv, args: {channels: $c}}
        nodes:
          - {id: u, block: unit, args: {c: true}}
        """, 8, 50, "define.unit.nodes[0].args.channels: expected an integer, not a boolean (got true) in node 'u.conv'", "u.conv"),
    # ---------------------------------------------------------------- block args: strings are not numbers or booleans
    case("string-for-int-arg", "lax pydantic reads '4' as 4", """
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        nodes:
          - id: a
            block: conv
            args:
              channels: '4'
        """, 8, 17, "expected an integer, not a string (got '4') in node 'a': write 4 without quotes", "a"),
    case("string-for-float-arg", "lax pydantic reads '0.5' as 0.5", """
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        nodes:
          - id: a
            block: dropout
            args:
              p: "0.5"
        """, 8, 10, "expected a number, not a string (got '0.5') in node 'a': write 0.5 without quotes", "a"),
    case("number-for-bool-arg", "lax pydantic reads 1 as true", """
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        nodes:
          - id: a
            block: linear
            args:
              features: 4
              bias: 1
        """, 9, 13, "nodes[0].args.bias: expected true or false, not a number (got 1)", "a"),
    case("string-for-bool-arg", "lax pydantic reads 'off' as false", """
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        nodes:
          - id: a
            block: linear
            args:
              features: 4
              bias: 'off'
        """, 9, 13, "expected true or false, not a string (got 'off')", "a"),
    case("string-expression-for-int-arg", "an expression yielding a string is refused the same way", """
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        params: {w: '8'}
        nodes:
          - id: a
            block: conv
            args:
              channels: $w
        """, 9, 17, "expected an integer, not a string (got '8')", "a"),
    # ---------------------------------------------------------------- expressions
    case("bool-arithmetic", "true + 3 is not 4", """
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        nodes:
          - id: a
            block: conv
            args:
              channels: "${true + 3}"
        """, 8, 17, "arithmetic needs numbers, got the boolean true in node 'a'", "a"),
    case("bool-in-a-function", "max(true, 0) is not 1", """
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        params: {deep: true}
        nodes:
          - id: a
            block: conv
            args:
              channels: "${max(deep, 0)}"
        """, 9, 17, "max() needs numbers, got the boolean true in node 'a'", "a"),
    case("negated-bool", "-true is not -1", """
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        params: {deep: true, w: "${-deep}"}
        nodes:
          - {id: a, block: identity}
        """, 4, 25, "arithmetic needs numbers, got the boolean true in param 'w'", None),
    case("bool-expression-for-repeat", "repeat: ${1 > 0} would stamp one copy", """
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        nodes:
          - id: a
            block: identity
            repeat: "${1 > 0}"
        """, 7, 13, "repeat of node 'a' must be an integer from 0 to 10000, got True", "a"),
    case("string-for-repeat", "a quoted number is not a count", """
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        nodes:
          - id: a
            block: identity
            repeat: '3'
        """, 7, 13, "repeat of node 'a' must be an integer from 0 to 10000, got '3'", "a"),
    # ---------------------------------------------------------------- the spec's own fields
    case("bool-in-input-shape", "an input of true channels is not 1 channel", """
        archforge: 1
        name: t
        input:
          shape: [true, 8, 8]
        nodes:
          - {id: a, block: identity}
        """, 4, 11, "input.shape[0]: input should be a valid integer (got True)", None),
    case("float-in-input-shape", "8.5 rows cannot be rounded silently", """
        archforge: 1
        name: t
        input:
          shape: [3, 8.5, 8]
        nodes:
          - {id: a, block: identity}
        """, 4, 14, "input.shape[1]: input should be a valid integer", None),
    case("string-in-input-shape", "a quoted size is not a size", """
        archforge: 1
        name: t
        input:
          shape: [3, '8', 8]
        nodes:
          - {id: a, block: identity}
        """, 4, 14, "input.shape[1]: input should be a valid integer (got '8')", None),
    case("bool-format-version", "archforge: true is not version 1", """
        archforge: true
        name: t
        input: {shape: [3, 8, 8]}
        nodes:
          - {id: a, block: identity}
        """, 1, 12, "unsupported format version True", None),
    # ---------------------------------------------------------------- YAML 1.1 oddities
    case("base-60-int", "190:20:30 would be 685230", """
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        nodes:
          - id: a
            block: conv
            args:
              channels: 190:20:30
        """, 8, 17, "'190:20:30' is a base-60 number in YAML 1.1: quote it ('190:20:30')", None),
    case("base-60-float", "1:30.5 would be 90.5", """
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        params: {eps: 1:30.5}
        nodes:
          - {id: a, block: identity}
        """, 4, 15, "'1:30.5' is a base-60 number in YAML 1.1", None),
    case("leading-zero-octal", "010 would be 8", """
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        nodes:
          - id: a
            block: conv
            args:
              channels: 010
        """, 8, 17, "'010' is an octal number in YAML 1.1: drop the leading zero, write 0o10 for octal, or quote it", None),
    case("yes-as-a-value", "yes is true in YAML 1.1 and the word 'yes' in YAML 1.2", """
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        nodes:
          - id: a
            block: linear
            args: {features: 4, bias: yes}
        """, 7, 31, "'yes' is the boolean true in YAML 1.1: write true, or quote it ('yes') for the word", None),
    case("off-as-a-value", "an activation called off would become false", """
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        nodes:
          - {id: a, block: act, args: {fn: off}}
        """, 5, 36, "'off' is the boolean false in YAML 1.1: write false", None),
    case("repeat-yes", "repeat: yes would be refused as a boolean; the hint says why it is one", """
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        nodes:
          - {id: stage, block: act, repeat: yes}
        """, 5, 37, "'yes' is the boolean true in YAML 1.1", None),
    case("date-as-a-value", "2001-12-14 would be a datetime.date", """
        archforge: 1
        name: t
        description: 2001-12-14
        input: {shape: [3, 8, 8]}
        nodes:
          - {id: a, block: identity}
        """, 3, 14, "'2001-12-14' is read as a date: quote it ('2001-12-14')", None),
    case("timestamp-tag", "an explicit !!timestamp is a date too", """
        archforge: 1
        name: t
        description: !!timestamp 2001-12-14t21:59:43.10-05:00
        input: {shape: [3, 8, 8]}
        nodes:
          - {id: a, block: identity}
        """, 3, 14, "is read as a date", None),
    case("date-as-a-key", "a key that is a date is not a name", """
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        params: {2001-12-14: 1}
        nodes:
          - {id: a, block: identity}
        """, 4, 10, "mapping key '2001-12-14' is read as a date, not a name: quote it", None),
    case("binary", "!!binary would be bytes", """
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        params: {w: !!binary aGVsbG8=}
        nodes:
          - {id: a, block: identity}
        """, 4, 13, "refused YAML tag '!!binary'", None),
    case("omap", "!!omap would be a list of pairs", """
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        params: {w: !!omap [{a: 1}]}
        nodes:
          - {id: a, block: identity}
        """, 4, 13, "refused YAML tag '!!omap'", None),
    case("pairs", "!!pairs would be a list of tuples", """
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        params: {w: !!pairs [{a: 1}]}
        nodes:
          - {id: a, block: identity}
        """, 4, 13, "refused YAML tag '!!pairs'", None),
    case("set", "!!set would be a set (a mapping of nulls)", """
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        params: {w: !!set {a, b}}
        nodes:
          - {id: a, block: identity}
        """, 4, 13, "refused YAML tag '!!set'", None),
    case("inf", ".inf is no size, rate or factor", """
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        nodes:
          - {id: a, block: layer_norm, args: {eps: .inf}}
        """, 5, 44, "value '.inf' is not a finite number", None),
    case("nan", ".nan compares false with every bound, so ge/lt checks pass it", """
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        nodes:
          - {id: a, block: dropout, args: {p: .nan}}
        """, 5, 39, "value '.nan' is not a finite number", None),
    case("float-overflow", "1e400 reads as infinity", """
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        params: {eps: 1e400}
        nodes:
          - {id: a, block: identity}
        """, 4, 15, "value '1e400' is not a finite number", None),
    case("merge-marker-as-a-value", "a plain '<<' value would be refused as an odd tag", """
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        params: {w: <<}
        nodes:
          - {id: a, block: identity}
        """, 4, 13, "'<<' is special in YAML: quote it ('<<')", None),
    # ---------------------------------------------------------------- names given twice, names that hide others
    case("define-input-twice", "inputs: [a, a] would drop one input", """
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        define:
          pair:
            inputs: [a, a]
            nodes:
              - {id: s, block: add, in: [a, a]}
        nodes:
          - {id: p, block: pair, in: [input, input]}
        """, 6, 17, "input 'a' is listed twice in define 'pair'", None),
    case("define-input-not-a-name", "a define input must be a name like an id", """
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        define:
          pair:
            inputs: [a, b-c]
            nodes:
              - {id: s, block: add, in: [a, b-c]}
        nodes:
          - {id: p, block: pair, in: [input, input]}
        """, 6, 17, "not a valid name", None),
    case("param-named-true", "a param called true would change what `true` means in expressions", """
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        params: {'true': 0}
        nodes:
          - {id: a, block: identity}
        """, 4, 10, "param name 'true' is reserved (a literal in expressions)", None),
    case("define-param-named-false", "same for a define's params", """
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        define:
          unit:
            params: {'false': 1}
            nodes:
              - {id: a, block: identity}
        nodes:
          - {id: u, block: unit}
        """, 6, 14, "param name 'false' is reserved", None),
    case("index-param-hidden-by-repeat", "in a repeated node `index` is the copy number, not the param", """
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        params: {index: 4}
        nodes:
          - id: a
            block: conv
            repeat: 2
            args:
              channels: "${index * 2}"
        """, 10, 17, "'index' in the args of repeated node 'a' is the copy number, which hides the param 'index'", "a"),
]


@pytest.mark.parametrize("c", SILENT_VALUES, ids=[c.id for c in SILENT_VALUES])
def test_silently_wrong_values(c: Case):
    check(c)


def test_unambiguous_spellings_are_accepted():
    graph = compile_text("""
        archforge: 1
        name: t
        description: 'yes'
        input: {shape: [3, 8, 8]}
        params: {w: 8, big: 1_000, index: 3}
        nodes:
          - {id: a, block: conv, args: {channels: 0o10, kernel: 0x3}}
          - {id: b, block: conv, args: {channels: "${w / 2}"}}
          - {id: c, block: dropout, args: {p: 1e-1}}
          - {id: d, block: dropout, args: {p: 0}}
          - {id: e, block: layer_norm, args: {eps: 1E-5}}
          - {id: f, block: linear, args: {features: "${big // 100}", bias: false}}
          - {id: g, block: identity, repeat: 2}
        """)
    nodes = graph.nodes
    assert (nodes["a"].args.channels, nodes["a"].args.kernel) == (8, 3)  # 0o10 is octal 8 in YAML 1.2 and Python
    assert nodes["b"].args.channels == 4 and type(nodes["b"].args.channels) is int  # a whole float is a whole number
    assert nodes["c"].args.p == 0.1 and nodes["d"].args.p == 0.0
    assert nodes["e"].args.eps == 1e-5
    assert nodes["f"].args.features == 10 and nodes["f"].args.bias is False
    assert graph.spec.description == "yes"
    assert list(nodes) == ["a", "b", "c", "d", "e", "f", "g.0", "g.1"]  # a param `index` is fine where no repeat reads it


def test_to_yaml_quotes_strings_that_would_read_back_as_numbers():
    spec = archforge.parse_spec(textwrap.dedent("""\
        archforge: 1
        name: t
        description: '1e5'
        input: {shape: [3, 8, 8]}
        params: {a: '0o7', b: 'yes', c: '1:30', d: '2001-12-14', e: 1.0e-05}
        nodes:
          - {id: a, block: identity}
        """))
    again = archforge.parse_spec(spec.to_yaml())
    assert again.description == "1e5"
    assert again.params == {"a": "0o7", "b": "yes", "c": "1:30", "d": "2001-12-14", "e": 1e-05}


_plain = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**18), 10**18),
    st.floats(min_value=-1e18, max_value=1e18, allow_nan=False, allow_infinity=False),
    st.text(max_size=12), st.sampled_from(["yes", "off", "010", "0o17", "1e5", "1:30", "2001-12-14", "<<", "=", "~", ".inf", "0x1F", "1_0"]),
)


@settings(max_examples=300, deadline=None, database=None)
@given(data=st.dictionaries(st.from_regex(r"\A[a-z_][a-z0-9_]{0,8}\Z"), st.one_of(_plain, st.lists(_plain, max_size=3)), max_size=4))
def test_what_to_yaml_writes_reads_back_unchanged(data):
    # Candidate specs are written with to_yaml: a string that looks like a number (or a YAML 1.1
    # boolean, date, base-60 number) must come back a string, and every number the same number.
    assert load_located(located_yaml.dump_yaml(data)).data == data


@settings(max_examples=300, deadline=None, database=None)
@given(text=st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=30))
def test_any_scalar_is_a_value_or_a_located_error(text):
    try:
        load_located(f"a: {text}\n", file="s.yaml")
    except SpecError as error:
        assert error.location is not None and error.location.file == "s.yaml"


# ---------------------------------------------------------------------- the strict kinds, as a property

class _Mode(Enum):
    FAST = "fast"
    SLOW = "slow"


class _Inner(BaseModel):
    model_config = {"extra": "forbid"}
    size: int = 1


class _Probe(BaseModel):
    """Every kind of annotation the built-in blocks use, and a few a plugin might."""

    model_config = {"extra": "forbid"}
    i: int = 0
    f: float = 0.0
    b: bool = False
    s: str = ""
    pi: Annotated[int, Field(gt=0)] = 1
    oi: int | None = None
    il: int | Literal["same"] = 0
    lit: Literal[1, 2] = 1
    words: Literal["avg", "max"] = "avg"
    mode: _Mode = _Mode.FAST
    pair: tuple[int, int] | None = None
    floats: list[float] = []
    table: dict[str, int] = {}
    inner: _Inner | None = None
    anything: Any = None


def _intlike(v: Any) -> bool:
    """An int, or a whole float such as the 2.0 of ``${dim / 2}``."""
    return type(v) is int or (type(v) is float and v.is_integer())


FIELD_EXPECTATIONS: dict[str, Any] = {
    # field -> predicate: does a value of this *kind* belong (pydantic then checks ranges and values)?
    "i": _intlike,
    "f": lambda v: type(v) in (int, float),
    "b": lambda v: type(v) is bool,
    "s": lambda v: type(v) is str,
    "pi": lambda v: _intlike(v) and v > 0,
    "oi": lambda v: v is None or _intlike(v),
    "il": lambda v: v == "same" or _intlike(v),
    "lit": lambda v: _intlike(v) and v in (1, 2),
    "words": lambda v: v in ("avg", "max"),
    "mode": lambda v: v in ("fast", "slow"),
    "pair": lambda v: v is None or (type(v) is list and len(v) == 2 and all(_intlike(x) for x in v)),
    "floats": lambda v: type(v) is list and all(type(x) in (int, float) for x in v),
    "table": lambda v: type(v) is dict and all(_intlike(x) for x in v.values()),
    "inner": lambda v: v is None or (type(v) is dict and set(v) <= {"size"} and all(_intlike(x) for x in v.values())),
    "anything": lambda v: True,
}

_scalars = st.one_of(
    st.booleans(), st.integers(-3, 3), st.sampled_from([0.0, 1.0, 2.5, -1.0]), st.none(),
    st.sampled_from(["", "4", "1.5", "true", "off", "same", "avg", "fast", "x"]),
)
_values = st.one_of(_scalars, st.lists(_scalars, max_size=3), st.dictionaries(st.sampled_from(["size", "k"]), _scalars, max_size=2))


def _accepts(field: str, value: Any) -> bool:
    if strictness_problem(_Probe, {field: value}) is not None:
        return False
    try:
        _Probe.model_validate({field: value})
    except ValidationError:
        return False
    return True


@settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(field=st.sampled_from(sorted(FIELD_EXPECTATIONS)), value=_values)
def test_strict_kinds_accept_exactly_the_values_of_the_annotated_kind(field, value):
    assert _accepts(field, value) == FIELD_EXPECTATIONS[field](value), (field, value)


def test_every_built_in_numeric_arg_refuses_booleans_and_strings():
    registry = archforge.registry.default_registry()
    checked = 0
    for name, entry in sorted(registry.blocks.items()):
        for field, info in entry.block.Args.model_fields.items():
            kinds = _plain_kinds(info.annotation)
            if kinds and kinds <= {"int", "float", "none"} and kinds & {"int", "float"}:
                assert strictness_problem(entry.block.Args, {field: True}) is not None, (name, field)
                assert strictness_problem(entry.block.Args, {field: "4"}) is not None, (name, field)
                assert strictness_problem(entry.block.Args, {field: 4}) is None, (name, field)
                checked += 1
    assert checked >= 30  # channels, kernel, stride, heads, p, eps, ... of the built-in blocks


def _plain_kinds(annotation: Any) -> set[str]:
    """int / float / none for plain `int`, `float`, `int | None`, `float | None` annotations; empty otherwise."""
    names = {int: "int", float: "float", type(None): "none"}
    members = getattr(annotation, "__args__", None) if type(annotation).__name__ in ("UnionType", "_UnionGenericAlias") else (annotation,)
    if members is None or any(m not in names for m in members):
        return set()
    return {names[m] for m in members}


# ====================================================================== class 2: ids that break the generated code

ID_CASES = [
    case("keyword-class", "self.class(x) is a SyntaxError in the generated forward", """
        archforge: 1
        name: t
        input: {shape: [4]}
        nodes:
          - {id: class, block: identity}
        """, 5, 10, "id 'class' is a Python keyword in node 'class': choose another id (e.g. 'class_')", "class"),
    case("keyword-None", "None is a keyword, not a name", """
        archforge: 1
        name: t
        input: {shape: [4]}
        nodes:
          - {id: a, block: identity}
          - {id: None, block: identity}
        """, 6, 10, "id 'None' is a Python keyword", "None"),
    case("keyword-True", "True is a keyword too (and a plain `True` id is a string in YAML)", """
        archforge: 1
        name: t
        input: {shape: [4]}
        nodes:
          - {id: True_, block: identity}
          - {id: "True", block: identity}
        """, 6, 10, "id 'True' is a Python keyword", "True"),
    case("keyword-async", "async became a keyword in Python 3.7", """
        archforge: 1
        name: t
        input: {shape: [4]}
        nodes:
          - {id: async, block: identity}
        """, 5, 10, "id 'async' is a Python keyword", "async"),
    case("keyword-inside-a-define", "self.u.lambda(x) breaks as well", """
        archforge: 1
        name: t
        input: {shape: [4]}
        define:
          unit:
            nodes:
              - {id: lambda, block: identity}
        nodes:
          - {id: u, block: unit}
        """, 7, 14, "id 'lambda' is a Python keyword in node 'u.lambda'", "u.lambda"),
    case("top-level-self", "`self = self.self(x)` hides the module from every later line", """
        archforge: 1
        name: t
        input: {shape: [4]}
        nodes:
          - {id: self, block: identity}
          - {id: b, block: identity}
        """, 5, 10, "id 'self' is the name of the module in its generated forward", "self"),
    case("module-attribute", "`training` is an attribute of every torch module", """
        archforge: 1
        name: t
        input: {shape: [4]}
        define:
          unit:
            nodes:
              - {id: training, block: identity}
        nodes:
          - {id: u, block: unit}
        """, 7, 14, "id 'training' is reserved (an attribute of torch modules)", "u.training"),
    case("leading-digit", "an attribute name cannot start with a digit", """
        archforge: 1
        name: t
        input: {shape: [4]}
        nodes:
          - {id: 1st, block: identity}
        """, 5, 10, "not a valid name", "nodes[0]"),
    case("non-ascii-letter", "only ASCII names: module paths and state-dict keys stay portable", """
        archforge: 1
        name: t
        input: {shape: [4]}
        nodes:
          - {id: größe, block: identity}
        """, 5, 10, "not a valid name", "nodes[0]"),
]


@pytest.mark.parametrize("c", ID_CASES, ids=[c.id for c in ID_CASES])
def test_ids_that_break_the_generated_code(c: Case):
    check(c)


def _id_spec(node_id: str, nested: bool) -> str:
    if nested:
        return (
            "archforge: 1\nname: t\ninput: {shape: [4, 2, 2]}\ndefine:\n  d:\n    nodes:\n"
            f"      - {{id: \"{node_id}\", block: identity}}\n      - {{id: r, block: identity, repeat: 2}}\n"
            "nodes:\n  - {id: a, block: d}\n  - {id: n, block: layer_norm}\n"
        )
    return (
        "archforge: 1\nname: t\ninput: {shape: [4, 2, 2]}\nnodes:\n"
        f"  - {{id: \"{node_id}\", block: identity}}\n  - {{id: r, block: identity, repeat: 2}}\n"
        "  - {id: n, block: layer_norm}\n  - {id: c, block: linear, args: {features: 4}}\n"
    )


_NAMES = sorted(set(keyword.kwlist) | set(keyword.softkwlist) | set(dir(builtins)) | set(dir(nn.Module())) | {"self", "x", "torch", "fx", "input_1", "r_0"})
_ids = st.one_of(st.sampled_from(_NAMES), st.from_regex(r"\A[A-Za-z_][A-Za-z0-9_]{0,12}\Z"))


@settings(max_examples=120, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(node_id=_ids, nested=st.booleans())
def test_every_id_that_validates_builds_and_runs(node_id, nested):
    spec = archforge.parse_spec(_id_spec(node_id, nested), file="spec.yaml")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SpecWarning)
        try:
            graph = archforge.validate(spec)
        except SpecError as error:
            assert error.location is not None and len(str(error).splitlines()) == 1, error
            return
        model = archforge.build(graph)
    out = model(torch.zeros(2, 4, 2, 2))
    assert out.shape[0] == 2


# ====================================================================== class 3: sizes that overflow or exhaust

def _shape_spec(shape: str, nodes: str = "  - {id: a, block: identity}\n") -> str:
    return f"archforge: 1\nname: t\ninput: {{shape: {shape}}}\nnodes:\n{nodes}"


BOUNDS = [
    # (reason, spec just under or at the bound, spec just over it, line:col of the error, message naming the bound)
    ("input elements: 2**28 per sample is the most (archforge.graph.bounds.MAX_ELEMENTS)",
     _shape_spec("[1, 16384, 16384]"), _shape_spec("[1, 16384, 16385]"), (3, 16),
     "input shape [1, 16384, 16385] is too large: 268,451,840 elements per sample, more than 268,435,456 (archforge.graph.bounds.MAX_ELEMENTS"),
    ("a vector input is bounded the same way",
     _shape_spec("[268435456]"), _shape_spec("[268435457]"), (3, 16), "more than 268,435,456 (archforge.graph.bounds.MAX_ELEMENTS"),
    ("the example of the issue: [1, 10**12, 10**12] overflowed in summary",
     _shape_spec("[1, 1000, 1000]"), _shape_spec("[1, 1000000000000, 1000000000000]"), (3, 16),
     "1,000,000,000,000,000,000,000,000 elements per sample"),
    ("a node's output is bounded like the input: 4194304 channels × 8 × 8 = 2**28",
     _shape_spec("[3, 8, 8]", "  - {id: a, block: conv, args: {channels: 4194304}}\n"),
     _shape_spec("[3, 8, 8]", "  - {id: a, block: conv, args: {channels: 4194305}}\n"), (5, 5),
     "node 'a' (conv) outputs (B, 4194305, 8, 8): 268,435,520 elements per sample, more than 268,435,456 (archforge.graph.bounds.MAX_ELEMENTS"),
    ("all node outputs together: 16 copies of 2**28 is 2**32 (archforge.graph.bounds.MAX_TOTAL_ELEMENTS)",
     _shape_spec("[1, 16384, 16384]", "  - {id: a, block: identity, repeat: 16}\n"),
     _shape_spec("[1, 16384, 16384]", "  - {id: a, block: identity, repeat: 17}\n"), (5, 5),
     "the outputs of the nodes up to 'a[16]' hold 4,563,402,752 elements per sample, more than 4,294,967,296 (archforge.graph.bounds.MAX_TOTAL_ELEMENTS"),
    ("a number written in YAML: 10**18 at most (archforge.spec.expressions.MAX_NUMBER)",
     _shape_spec("[4]") + "params: {n: 1000000000000000000}\n", _shape_spec("[4]") + "params: {n: 1000000000000000001}\n", (6, 13),
     "number '1000000000000000001' is too large: spec numbers are at most 1e+18 in magnitude (archforge.spec.expressions.MAX_NUMBER)"),
    ("a number computed by an expression has the same bound",
     _shape_spec("[4]") + "params: {n: \"${10 ** 18}\"}\n", _shape_spec("[4]") + "params: {n: \"${10 ** 18 + 1}\"}\n", (6, 13),
     "number too large: spec numbers are at most 1e+18 in magnitude (archforge.spec.expressions.MAX_NUMBER) in param 'n'"),
    ("a float computed by an expression too",
     _shape_spec("[4]") + "params: {n: \"${1e9 * 1e9}\"}\n", _shape_spec("[4]") + "params: {n: \"${1e9 * 1.1e9}\"}\n", (6, 13),
     "number too large"),
    ("repeat: 10000 copies at most (archforge.graph.expand.MAX_REPEAT)",
     _shape_spec("[4]", "  - {id: a, block: identity, repeat: 10000}\n"), _shape_spec("[4]", "  - {id: a, block: identity, repeat: 10001}\n"), (5, 38),
     "repeat of node 'a' must be an integer from 0 to 10000, got 10001 (archforge.graph.expand.MAX_REPEAT; raise it there"),
    ("expressions: 500 characters at most (archforge.spec.expressions.MAX_EXPRESSION_LENGTH)",
     _shape_spec("[4]") + "params: {n: \"${" + "1" + "+0" * 249 + " }\"}\n",  # 500 characters between the braces
     _shape_spec("[4]") + "params: {n: \"${" + "1" + "+0" * 250 + "}\"}\n", (6, 13),
     "expression longer than 500 characters (archforge.spec.expressions.MAX_EXPRESSION_LENGTH)"),
]


@pytest.mark.parametrize("reason, under, over, where, message", BOUNDS, ids=[b[0][:60] for b in BOUNDS])
def test_bounds_just_under_and_just_over(reason, under, over, where, message):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SpecWarning)
        archforge.validate(archforge.parse_spec(under, file="spec.yaml"))
    error = diagnose(over)
    assert (error.location.line, error.location.column) == where, error
    assert message in error.message, error.message


def test_node_count_bound(monkeypatch):
    monkeypatch.setattr(expand_module, "MAX_NODES", 20)
    compile_text(_shape_spec("[4]", "  - {id: a, block: identity, repeat: 20}\n"))
    error = diagnose(_shape_spec("[4]", "  - {id: a, block: identity, repeat: 21}\n"))
    assert (error.location.line, error.location.column) == (5, 5)
    assert "the spec expands to more than 20 nodes (archforge.graph.expand.MAX_NODES; raise it there" in error.message


def test_a_nine_line_spec_of_90000_nodes_is_refused_quickly():
    # A define of 300 copies used 300 times: 90,000 nodes, under the old bound of 100,000,
    # made 'graph' and 'summary' run for minutes. The default bound refuses it during expansion.
    import time

    text = _shape_spec("[4]", "  - {id: a, block: wide, repeat: 300}\n") + "define:\n  wide:\n    nodes:\n      - {id: i, block: identity, repeat: 300}\n"
    start = time.monotonic()
    error = diagnose(text)
    assert "the spec expands to more than 10,000 nodes (archforge.graph.expand.MAX_NODES" in error.message
    assert time.monotonic() - start < 30


def test_node_count_bound_counts_instances_of_pass_through_defines(monkeypatch):
    monkeypatch.setattr(expand_module, "MAX_NODES", 20)
    text = _shape_spec("[4]", "  - {id: a, block: skip, repeat: 21}\n") + "define:\n  skip:\n    nodes:\n      - {id: i, block: identity}\n    output: input\n"
    error = diagnose(text)
    assert "more than 20 nodes" in error.message


def _nested_defines(levels: int) -> str:
    lines = ["archforge: 1", "name: t", "input: {shape: [4]}", "define:"]
    for i in range(levels):
        inner = f"d{i + 1}" if i + 1 < levels else "identity"
        lines += [f"  d{i}:", "    nodes:", f"      - {{id: x, block: {inner}}}"]
    return "\n".join([*lines, "nodes:", "  - {id: a, block: d0}"]) + "\n"


def test_define_nesting_bound():
    # 1000 nested defines used to end in a RecursionError traceback.
    assert len(compile_text(_nested_defines(50)).nodes) == 1  # d0 … d49: 50 levels
    error = diagnose(_nested_defines(51))
    assert (error.location.line, error.location.column) == (154, 24), error  # `block: d50` inside d49 (line 5 + 3 × 49 + 2)
    assert "defines nested more than 50 deep" in error.message and "(archforge.graph.expand.MAX_DEFINE_DEPTH" in error.message
    assert "defines nested more than 50 deep" in diagnose(_nested_defines(1000)).message


def test_document_value_bound(monkeypatch):
    monkeypatch.setattr(located_yaml, "MAX_VALUES", 4)
    assert load_located("[1, 2, 3]").data == [1, 2, 3]  # the list and its 3 items: 4 values
    with pytest.raises(SpecError, match=r"^<string>:1:11: document too large: more than 4 values .*\(archforge.spec.located_yaml.MAX_VALUES\)"):
        load_located("[1, 2, 3, 4]")


def test_document_depth_bound():
    assert load_located("[" * 101 + "]" * 101).data is not None  # the innermost list is 100 levels below the top
    with pytest.raises(SpecError, match=r"document nested more than 100 levels deep \(archforge.spec.located_yaml.MAX_DEPTH\)"):
        load_located("[" * 102 + "]" * 102)


def test_file_size_bound(monkeypatch, tmp_path):
    monkeypatch.setattr(load_module, "MAX_SPEC_BYTES", 80)
    text = "archforge: 1\nname: t\ninput: {shape: [4]}\nnodes: [{block: identity}]\n"
    path = tmp_path / "s.yaml"
    path.write_text(text.ljust(80))
    assert archforge.load_spec(path).name == "t"
    path.write_text(text.ljust(81))
    with pytest.raises(SpecError, match=r"larger than 80 bytes \(archforge.spec.load.MAX_SPEC_BYTES\)"):
        archforge.load_spec(path)


def test_a_spec_path_that_is_no_regular_file_is_refused_before_reading(tmp_path):
    import os

    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)
    cases = [
        (tmp_path, "a directory", "a directory would fail to open anyway, said plainly"),
        (fifo, "not a regular file", "opening a FIFO blocks until a writer comes: never"),
        ("/dev/zero", "not a regular file", "an endless device must not be read into memory"),
        (tmp_path / "missing.yaml", "No such file or directory", "a missing file: the OS's reason"),
    ]
    for path, expected, reason in cases:
        with pytest.raises(SpecError, match=f"^{re.escape(str(path))}:1:1: cannot read spec: {expected}$"):
            archforge.load_spec(path)


def test_expression_string_and_list_bounds():
    from archforge.spec.expressions import MAX_ITEMS, MAX_STRING, ExpressionError, evaluate

    assert len(evaluate("s + 'a'", {"s": "a" * (MAX_STRING - 1)})) == MAX_STRING
    with pytest.raises(ExpressionError, match=r"string longer than 10000 characters \(archforge.spec.expressions.MAX_STRING\)"):
        evaluate("s + 'a'", {"s": "a" * MAX_STRING})
    assert len(evaluate("[l, 1]", {"l": [0] * (MAX_ITEMS - 2)})) == 2  # 2 + 9998 items
    with pytest.raises(ExpressionError, match=r"more than 10000 items \(archforge.spec.expressions.MAX_ITEMS\)"):
        evaluate("[l, 1]", {"l": [0] * (MAX_ITEMS - 1)})


def test_summary_of_a_huge_input_is_a_located_error_not_an_overflow():
    text = _shape_spec("[1, 1000000000000, 1000000000000]")
    with pytest.raises(SpecError) as info:
        archforge.summarize(archforge.parse_spec(text, file="spec.yaml"))
    assert (info.value.location.line, info.value.location.column) == (3, 16)


def test_bound_constants_are_the_documented_values():
    # The messages above quote these numbers; a change here is a change of the documented bounds.
    assert bounds.MAX_ELEMENTS == 2**28 and bounds.MAX_TOTAL_ELEMENTS == 2**32
    assert expand_module.MAX_REPEAT == 10_000 and expand_module.MAX_NODES == 10_000 and expand_module.MAX_DEFINE_DEPTH == 50


def test_the_corpus_is_unique_and_every_case_has_a_reason():
    cases = MERGE_ERRORS + SILENT_VALUES + ID_CASES
    assert len({c.id for c in cases}) == len(cases)
    assert all(c.reason for c in cases)


# ====================================================================== faults of a block, survived by the graph stage

class _Faulty(archforge.Block):
    """A plugin block whose behaviour each test picks through its args."""

    name = "faulty"
    layout = "any"

    class Args(archforge.BlockArgs):
        mode: str = "ok"

        @field_validator("mode")
        @classmethod
        def _explode(cls, mode: str) -> str:
            if mode == "validator-raises":
                raise RuntimeError("validator bug")  # not a ValueError: pydantic lets it through
            if mode == "validator-exits":
                raise SystemExit(3)
            return mode

    def infer(self, x, args):
        if args.mode == "infer-exits":
            raise SystemExit(4)
        if args.mode == "float-channels":
            return x.replace(channels=2.5)
        if args.mode == "huge":
            return x.replace(channels=10**5000)
        if args.mode == "bad-str":
            raise _Unprintable()
        return x

    def build(self, x, args, *, device=None, dtype=None):
        return nn.Identity()


class _Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("no text")


@pytest.fixture(scope="module")
def faulty_registry():
    return archforge.testing.registry_with(_Faulty, name="faulty-plugin", entry_points=False)


@pytest.mark.parametrize(("mode", "message"), [
    ("validator-raises", "block 'faulty' from plugin 'faulty-plugin' failed to check the args of node 'a': RuntimeError: validator bug"),
    ("validator-exits", "failed to check the args of node 'a': SystemExit: 3"),
    ("infer-exits", "block 'faulty' from plugin 'faulty-plugin' failed in shape inference of node 'a': SystemExit: 4"),
    ("float-channels", "block 'faulty' from plugin 'faulty-plugin' returned a malformed Shape"),
    ("huge", "node 'a' (faulty) outputs a vector with sizes too long to print: about 10^5000 elements per sample"),
    ("bad-str", "failed in shape inference of node 'a': _Unprintable"),  # the type name when str() fails
])
def test_a_faulty_block_is_a_located_error(faulty_registry, mode, message):
    text = f"archforge: 1\nname: t\ninput: {{shape: [4]}}\nnodes:\n  - {{id: a, block: faulty, args: {{mode: {mode}}}}}\n"
    with pytest.raises(SpecError) as info:
        archforge.validate(archforge.parse_spec(text, file="spec.yaml"), registry=faulty_registry)
    assert info.value.location.line == 5, info.value
    assert message in info.value.message, info.value.message
