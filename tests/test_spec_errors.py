"""A corpus of broken specs: each one must fail with a SpecError at the exact line (and column) with the right message.

Every case is a whole spec, so the line numbers can be checked by eye: line 1 is the
first line of the string. ``node`` is the node path the error names (``None`` for
spec-level problems). Then: an unreachable node is a warning, not an error; a YAML tag
never executes anything; the command line prints one compiler-style line and exits 1.
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest
from torch import nn

import archforge
from archforge import Block, BlockArgs, Shape, SpecError, SpecWarning
from archforge.testing import registry_with

ANY = object()


class _TestClassToken(Block):
    """Prepends a class token; stands in for a class-token block so that these tests depend only on the core."""

    name = "test_class_token"
    layout = "tokens"
    family = "positional"

    def infer(self, x: Shape, args: BlockArgs) -> Shape:
        return x.replace(extra_tokens=x.extra_tokens + 1)

    def build(self, x: Shape, args: BlockArgs, *, device=None, dtype=None) -> nn.Module:
        return nn.Identity()


@pytest.fixture(scope="module")
def registry():
    return registry_with(_TestClassToken, name="test-spec-errors")


@dataclass
class Case:
    id: str
    text: str
    line: int
    column: int | None  # None where the column is not meaningful
    message: str | re.Pattern[str]  # a substring of the message, or a regex it must match
    node: object = ANY  # the node path, None for spec-level errors, ANY to not check


def case(id, text, line, column, message, node=ANY):
    return Case(id, textwrap.dedent(text).lstrip("\n"), line, column, message, node)


def _merge_bomb(levels: int) -> str:
    """A few hundred bytes whose '<<' merges of aliases would flatten to 10**levels pairs."""
    node = "&a0 {x: 1}"
    for i in range(1, levels + 1):
        node = f"&a{i} {{<<: [{node}, {', '.join([f'*a{i - 1}'] * 9)}]}}"
    return node


MERGE_BOMB = _merge_bomb(9)  # a billion pairs: refused before any of them is built

CASES = [
    # ------------------------------------------------------------------ YAML itself
    case("yaml-unclosed-flow-mapping", """
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        nodes:
          - {id: a, block: conv, args: {channels: 4}
          - {id: b, block: act}
        """, 6, 3, "YAML syntax error: expected ',' or '}', but got '-'", None),
    case("yaml-tab-indentation", """
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        nodes:
        \t- {id: a, block: act}
        """, 5, 1, "YAML syntax error: found character '\\t' that cannot start any token", None),
    case("yaml-bad-indentation", """
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        nodes:
          - id: a
            block: conv
           args: {channels: 4}
        """, 7, 4, "YAML syntax error: expected <block end>, but found '<block mapping start>'", None),
    case("unquoted-expression-in-flow-mapping", """
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        params: {w: 4}
        nodes:
          - {id: a, block: conv, args: {channels: ${w * 2}}}
        """, 6, 44, 'inside {...} or [...] an expression must be quoted: "${...}"', None),
    case("tag-python-object-apply", """
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        nodes:
          - {id: a, block: conv, args: {channels: !!python/object/apply:os.system ["echo pwned"]}}
        """, 5, 43, "refused YAML tag '!!python/object/apply:os.system': specs may only contain plain data", None),
    case("tag-python-name", """
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        params:
          w: !!python/name:os.system
        nodes:
          - {id: a, block: act}
        """, 5, 6, "refused YAML tag '!!python/name:os.system'", None),
    case("tag-custom", """
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        define: !include blocks.yaml
        nodes:
          - {id: a, block: act}
        """, 4, 9, "refused YAML tag '!include'", None),
    case("tag-set-on-a-mapping", """
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        params: !!set {a, b}
        nodes:
          - {id: a, block: act}
        """, 4, 9, "refused YAML tag '!!set'", None),
    case("duplicate-top-level-key", """
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        name: again
        nodes:
          - {id: a, block: act}
        """, 4, 1, "duplicate key 'name'", None),
    case("duplicate-key-in-args", """
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        nodes:
          - id: a
            block: conv
            args:
              channels: 4
              kernel: 3
              channels: 8
        """, 10, 7, "duplicate key 'channels'", None),
    case("undefined-alias", """
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        nodes:
          - {id: a, block: conv, args: *conv_args}
        """, 5, 32, "YAML syntax error: found undefined alias 'conv_args'", None),
    case("merge-key-of-a-scalar", """
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        params: &p 4
        nodes:
          - id: a
            block: conv
            args: {<<: *p, channels: 4}
        """, 8, 12, "'<<' can only merge a mapping or a list of mappings", None),
    case("key-read-as-boolean", """
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        nodes:
          - {id: a, block: act, args: {on: relu}}
        """, 5, 32, "mapping key 'on' is read as a boolean, not a name: quote it", None),
    case("control-character", """
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        nodes:
          - {id: a, block: act\x07}
        """, 5, 23, "unreadable YAML: character U+0007 is not allowed in a spec", None),
    case("numeric-key", """
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        params: {1: 4}
        nodes:
          - {id: a, block: act}
        """, 4, 10, "mapping key '1' is read as a number, not a name: quote it", None),
    case("duplicate-anchor", """
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        nodes:
          - {id: a, block: act}
          - &x {id: b, block: act}
          - &x {id: c, block: act}
        """, 7, 5, "YAML syntax error: found duplicate anchor 'x' (first at line 6)", None),
    case("merge-key-bomb", """
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        params:
          bomb: BOMB
        nodes:
          - {id: a, block: act}
        """.replace("BOMB", MERGE_BOMB), 5, 9, "document too large: more than 200000 values ('<<' merges of aliases?)", None),
    # ------------------------------------------------------------------ document structure
    case("missing-format-version", """
        name: t
        input: {shape: [3, 8, 8]}
        nodes:
          - {id: a, block: act}
        """, 1, 1, "missing format version: add 'archforge: 1' at the top", None),
    case("unsupported-format-version", """
        archforge: 2
        name: t
        input: {shape: [3, 8, 8]}
        nodes:
          - {id: a, block: act}
        """, 1, 12, "unsupported format version 2: this archforge reads 'archforge: 1'", None),
    case("top-level-not-a-mapping", """
        - archforge: 1
        - name: t
        """, 1, 1, "a spec must be a mapping of keys (archforge, name, input, nodes, ...), got a list", None),
    case("empty-document", "", 1, 1, "the spec is empty", None),
    case("comments-only", """
        # nothing here yet

        # still nothing
        """, 1, 1, "the spec is empty", None),
    case("missing-nodes", """
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        params: {w: 4}
        """, 1, 1, "missing key 'nodes'", None),
    case("empty-nodes-list", """
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        nodes: []
        """, 4, 8, "nodes: needs at least 1 item, got 0", None),
    case("unknown-top-level-key", """
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        parms: {w: 4}
        nodes:
          - {id: a, block: act}
        """, 4, 1, "unknown key 'parms' (did you mean 'params'?)", None),
    case("unknown-node-key", """
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        nodes:
          - {id: a, block: act}
          - {id: b, blok: conv, args: {channels: 4}}
        """, 6, 13, "unknown key 'blok' in node 'b' (did you mean 'block'?)", "b"),
    case("missing-block", """
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        nodes:
          - {id: a, args: {fn: relu}}
        """, 5, 5, "missing key 'block' in node 'a'", "a"),
    case("bad-spec-name", """
        archforge: 1
        name: my-net
        input: {shape: [3, 8, 8]}
        nodes:
          - {id: a, block: act}
        """, 2, 7, "name: not a valid name: use letters, digits and '_', not starting with a digit (got 'my-net')", None),
    case("input-shape-not-positive", """
        archforge: 1
        name: t
        input: {shape: [3, 0, 8]}
        nodes:
          - {id: a, block: act}
        """, 3, 16, "input shape must be positive, got [3, 0, 8]", None),
    case("input-shape-four-dims", """
        archforge: 1
        name: t
        input: {shape: [1, 3, 8, 8]}
        nodes:
          - {id: a, block: act}
        """, 3, 16, "input.shape: needs at most 3 items, got 4", None),
    # ------------------------------------------------------------------ ids
    case("bad-id-pattern", """
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        nodes:
          - {id: 2conv, block: conv, args: {channels: 4}}
        """, 5, 10, "nodes[0].id: not a valid name: use letters, digits and '_', not starting with a digit (got '2conv')", "nodes[0]"),
    case("duplicate-ids", """
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        nodes:
          - {id: a, block: conv, args: {channels: 4}}
          - {id: b, block: act}
          - {id: a, block: act}
        """, 7, 10, "duplicate id 'a': already used by another node in this list", "a"),
    case("duplicate-ids-in-define", """
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        define:
          pair:
            nodes:
              - {id: x, block: act}
              - {id: x, block: act}
        nodes:
          - {id: p, block: pair}
        """, 8, 14, "duplicate id 'x': already used by another node in this list", "p.x"),
    case("id-input-is-reserved", """
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        nodes:
          - {id: input, block: act}
        """, 5, 10, "duplicate id 'input': an input name in this list", "input"),
    case("id-clashing-with-a-module-attribute", """
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        nodes:
          - {id: stem, block: act}
          - {id: forward, block: act}
        """, 6, 10, "id 'forward' is reserved (an attribute of torch modules) in node 'forward': choose another id", "forward"),
    # ------------------------------------------------------------------ blocks and args
    case("unknown-block", """
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        nodes:
          - {id: stem, block: conv, args: {channels: 4}}
          - {id: attn, block: convv, args: {channels: 4}}
        """, 6, 23, "unknown block 'convv' in node 'attn' (did you mean 'conv'?)", "attn"),
    case("unknown-block-arg", """
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        nodes:
          - {id: stem, block: conv, args: {channels: 4, strid: 2}}
        """, 5, 49, "unknown key 'strid' in node 'stem' (did you mean 'stride'?)", "stem"),
    case("wrong-arg-type", """
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        nodes:
          - {id: stem, block: conv, args: {channels: wide}}
        """, 5, 46, "nodes[0].args.channels: expected an integer, not a string (got 'wide') in node 'stem'", "stem"),
    case("arg-out-of-range", """
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        nodes:
          - {id: stem, block: conv, args: {channels: 0}}
        """, 5, 46, "nodes[0].args.channels: input should be greater than 0 (got 0) in node 'stem'", "stem"),
    case("arg-union-alternatives", """
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        nodes:
          - {id: stem, block: conv, args: {channels: 4, padding: full}}
        """, 5, 58, "nodes[0].args.padding: expected an integer or 'same' (got 'full') in node 'stem'", "stem"),
    case("block-param-not-a-name", """
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        params: {op: 3}
        nodes:
          - {id: a, block: $op}
        """, 6, 20, "block of node 'a' must be a block name, got 3", "a"),
    # ------------------------------------------------------------------ params and expressions
    case("unknown-param", """
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        params: {width: 4}
        nodes:
          - {id: stem, block: conv, args: {channels: $widht}}
        """, 6, 46, "unknown param 'widht' in node 'stem' (did you mean 'width'?)", "stem"),
    case("unknown-param-in-params", """
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        params: {width: 4, wide: "${widht * 2}"}
        nodes:
          - {id: stem, block: act}
        """, 4, 26, "unknown param 'widht' in param 'wide' (did you mean 'width'?)", None),
    case("division-by-zero", """
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        params: {width: 4, groups: 0}
        nodes:
          - {id: stem, block: conv, args: {channels: "${width // groups}"}}
        """, 6, 46, "cannot evaluate '${width // groups}': integer division or modulo by zero in node 'stem'", "stem"),
    case("disallowed-function", """
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        nodes:
          - {id: stem, block: conv, args: {channels: "${open('weights.bin')}"}}
        """, 5, 46, "function 'open' is not available; allowed: abs, ceil, float, floor, int, log2, max, min, round, sqrt in node 'stem'", "stem"),
    case("dunder-import", """
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        nodes:
          - {id: stem, block: conv, args: {channels: "${__import__('os')}"}}
        """, 5, 46, "function '__import__' is not available", "stem"),
    case("attribute-access", """
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        params: {width: 4}
        nodes:
          - {id: stem, block: conv, args: {channels: "${width.__class__}"}}
        """, 6, 46, "attribute access ('.__class__') is not allowed in expressions in node 'stem'", "stem"),
    case("expression-syntax", """
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        params: {width: 4}
        nodes:
          - {id: stem, block: conv, args: {channels: "${width *}"}}
        """, 6, 46, "invalid expression '${width *}': invalid syntax in node 'stem'", "stem"),
    case("huge-power", """
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        nodes:
          - {id: stem, block: conv, args: {channels: "${2 ** 2 ** 20}"}}
        """, 5, 46, "2 ** 1048576 is too large (more than 2 ** 64", "stem"),
    # ------------------------------------------------------------------ repeat
    case("repeat-negative", """
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        nodes:
          - {id: stage, block: act, repeat: -1}
        """, 5, 37, "repeat of node 'stage' must be an integer from 0 to 10000, got -1", "stage"),
    case("repeat-not-an-integer", """
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        nodes:
          - {id: stage, block: act, repeat: 1.5}
        """, 5, 37, "repeat of node 'stage' must be an integer from 0 to 10000, got 1.5", "stage"),
    case("repeat-expression-negative", """
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        params: {depth: 2}
        nodes:
          - {id: stage, block: act, repeat: "${depth - 3}"}
        """, 6, 37, "repeat of node 'stage' must be an integer from 0 to 10000, got -1", "stage"),
    case("repeat-boolean", """
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        nodes:
          - {id: stage, block: act, repeat: true}
        """, 5, 37, "nodes[0].repeat: expected an integer or a ${...} expression (got True) in node 'stage'", "stage"),
    case("repeat-of-a-merge", """
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        nodes:
          - {id: stem, block: act}
          - {id: s, block: add, in: [stem, input], repeat: 2}
        """, 6, 52, "node 's' repeats a block with 2 inputs; a repeat chains its copies, so it needs exactly one", "s"),
    # ------------------------------------------------------------------ references and graph checks
    case("unknown-input", """
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        nodes:
          - {id: stem, block: conv, args: {channels: 4}}
          - {id: body, block: act, in: stm}
        """, 6, 32, "unknown input 'stm' in node 'body' (did you mean 'stem'?)", "body"),
    case("unknown-input-in-a-list", """
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        nodes:
          - {id: stem, block: conv, args: {channels: 3}}
          - {id: sum, block: add, in: [stem, inptu]}
        """, 6, 38, "unknown input 'inptu' in node 'sum' (did you mean 'input'?)", "sum"),
    case("in-of-the-wrong-type", """
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        nodes:
          - {id: stem, block: act}
          - {id: b, block: act, in: {from: stem}}
        """, 6, 29, "nodes[1].in: expected a string or a list of strings (got a mapping) in node 'b'", "b"),
    case("empty-in-list", """
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        nodes:
          - {id: stem, block: act}
          - {id: b, block: act, in: []}
        """, 6, 29, "node 'b' has an empty 'in' list", "b"),
    case("unknown-output", """
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        nodes:
          - {id: stem, block: act}
          - {id: head, block: act}
        output: haed
        """, 7, 9, "unknown output 'haed' (did you mean 'head'?)", None),
    case("cycle-of-two", """
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        nodes:
          - {id: a, block: act, in: b}
          - {id: b, block: act, in: a}
        """, 5, 5, "cycle: a → b → a", "a"),
    case("cycle-of-three-in-order", """
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        nodes:
          - {id: stem, block: act}
          - {id: a, block: act, in: c}
          - {id: b, block: act}
          - {id: c, block: act}
        """, 6, 5, "cycle: a → b → c → a", "a"),
    case("cycle-through-a-merge", """
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        nodes:
          - {id: stem, block: act}
          - {id: acc, block: add, in: [stem, acc]}
        """, 6, 5, "cycle: acc → acc", "acc"),
    case("merge-with-one-input", """
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        nodes:
          - {id: stem, block: act}
          - {id: sum, block: add, in: [stem]}
        """, 6, 31, "block 'add' in node 'sum' merges two or more inputs, got 1: list them in 'in'", "sum"),
    case("merge-without-in", """
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        nodes:
          - {id: stem, block: act}
          - {id: cat, block: concat}
        """, 6, 5, "block 'concat' in node 'cat' merges two or more inputs, got 1: list them in 'in'", "cat"),
    case("conv-with-two-inputs", """
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        nodes:
          - {id: stem, block: act}
          - {id: c, block: conv, in: [stem, input], args: {channels: 4}}
        """, 6, 30, "block 'conv' in node 'c' takes 1 input, got 2", "c"),
    # ------------------------------------------------------------------ defines
    case("define-recursion-direct", """
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        define:
          loop:
            nodes:
              - {id: inner, block: loop}
        nodes:
          - {id: net, block: loop}
        """, 7, 28, "define 'loop' uses itself (loop → loop)", "net.inner"),
    case("define-recursion-indirect", """
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        define:
          ping:
            nodes:
              - {id: x, block: pong}
          pong:
            nodes:
              - {id: y, block: ping}
        nodes:
          - {id: net, block: ping}
        """, 10, 24, "define 'ping' uses itself (ping → pong → ping)", "net.x.y"),
    case("unknown-define-param", """
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        define:
          unit:
            params: {channels: 8}
            nodes:
              - {id: c, block: conv, args: {channels: $channels}}
        nodes:
          - {id: u, block: unit, args: {chanels: 4}}
        """, 10, 33, "unknown param 'chanels' for define 'unit' in node 'u' (did you mean 'channels'?)", "u"),
    case("define-input-count", """
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        define:
          fuse:
            inputs: [a, b]
            nodes:
              - {id: s, block: add, in: [a, b]}
        nodes:
          - {id: stem, block: act}
          - {id: f, block: fuse, in: stem}
        """, 11, 30, "define 'fuse' takes 2 input(s) (a, b), node 'f' gives 1", "f"),
    case("unknown-define-output", """
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        define:
          unit:
            nodes:
              - {id: mix, block: act}
            output: mx
        nodes:
          - {id: u, block: unit, repeat: 2}
        """, 8, 13, "unknown output 'mx' of define 'unit' in node 'u[0]' (did you mean 'mix'?)", "u[0]"),
    case("unknown-key-in-define-body", """
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        define:
          unit:
            nodes:
              - {id: c, blck: conv}
        nodes:
          - {id: u, block: unit}
        """, 7, 17, "unknown key 'blck' in node 'unit.c' (did you mean 'block'?)", "unit.c"),
    case("error-in-define-body-names-the-instance", """
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        params: {width: 8}
        define:
          unit:
            params: {c: 8}
            nodes:
              - {id: conv1, block: conv, args: {channels: $c}}
              - {id: conv2, block: conv, args: {channels: "${c - 8}"}}
        nodes:
          - {id: stem, block: conv, args: {channels: $width}}
          - {id: local, block: unit, repeat: 2}
        """, 10, 51, "define.unit.nodes[1].args.channels: input should be greater than 0 (got 0) in node 'local[0].conv2'", "local[0].conv2"),
    case("error-in-nested-define", """
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        define:
          inner:
            nodes:
              - {id: c, block: conv, args: {channels: 0}}
          outer:
            nodes:
              - {id: i, block: inner}
        nodes:
          - {id: local, block: outer, repeat: 4}
        """, 7, 47, "greater than 0 (got 0) in node 'local[0].i.c'", "local[0].i.c"),
    # ------------------------------------------------------------------ shapes and layouts
    case("add-of-mismatched-channels", """
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        nodes:
          - {id: left, block: conv, args: {channels: 8}}
          - {id: right, block: conv, in: input, args: {channels: 16}}
          - {id: sum, block: add, in: [left, right]}
        """, 7, 5, re.compile(r"^node 'sum' \(add\): add needs equal shapes, .*; inputs: 'left' is \(B, 8, 8, 8\), 'right' is \(B, 16, 8, 8\)$"), "sum"),
    case("add-of-mismatched-sizes-from-a-stride", """
        archforge: 1
        name: t
        input: {shape: [4, 7, 7]}
        nodes:
          - {id: down, block: conv, args: {channels: 4, stride: 2}}
          - {id: pooled, block: pool, in: input, args: {kernel: 2}}
          - {id: sum, block: add, in: [down, pooled]}
        """, 7, 5, re.compile(r"^node 'sum' \(add\): add needs equal shapes, .*; inputs: 'down' is \(B, 4, 4, 4\), 'pooled' is \(B, 4, 3, 3\)$"), "sum"),
    case("concat-of-mismatched-sizes", """
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        nodes:
          - {id: full, block: conv, args: {channels: 8}}
          - {id: halved, block: pool, in: input}
          - {id: cat, block: concat, in: [full, halved]}
        """, 7, 5, re.compile(r"^node 'cat' \(concat\): concat needs equal shapes apart from channels, .*'full' is \(B, 8, 8, 8\), 'halved' is \(B, 3, 4, 4\)$"), "cat"),
    case("patch-size-not-dividing", """
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        nodes:
          - {id: embed, block: patch_embed, args: {patch: 3, dim: 16}}
        """, 5, 5, "node 'embed' (patch_embed): patch size 3 does not divide the 8×8 input; input: 'input' is (B, 3, 8, 8)", "embed"),
    case("pool-kernel-larger-than-input", """
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        nodes:
          - {id: p, block: pool, args: {kernel: 9}}
        """, 5, 5, "node 'p' (pool): pool kernel 9 does not fit a 8×8 input; input: 'input' is (B, 3, 8, 8)", "p"),
    case("classifier-token-pool-without-class-token", """
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        nodes:
          - {id: embed, block: patch_embed, args: {patch: 4, dim: 16}}
          - {id: head, block: classifier, args: {classes: 10, pool: token}}
        """, 6, 5, "node 'head' (classifier): pool 'token' takes the class token, but the input has none", "head"),
    case("class-token-into-a-map-block", """
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        nodes:
          - {id: embed, block: patch_embed, args: {patch: 4, dim: 16}}
          - {id: cls, block: test_class_token}
          - {id: conv, block: conv, args: {channels: 16}}
        """, 7, 5, "block 'conv' in node 'conv' takes map, but input 'cls' is tokens (B, 5, 16) tokens 2×2+1: 1 extra (class) token(s) cannot be laid out on a grid", "conv"),
    case("vector-into-a-conv", """
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        nodes:
          - {id: pooled, block: global_pool}
          - {id: conv, block: conv, args: {channels: 4}}
        """, 6, 5, "block 'conv' in node 'conv' takes map, but input 'pooled' is vector (B, 3): a vector has no grid to convert back from", "conv"),
    case("layout-error-in-a-repeated-define", """
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        define:
          unit:
            nodes:
              - {id: conv1, block: act}
              - {id: conv2, block: conv, args: {channels: 4}}
              - {id: squeeze, block: global_pool}
        nodes:
          - {id: stage, block: unit, repeat: 2}
        """, 8, 9, "block 'conv' in node 'stage[1].conv2' takes map, but input 'stage[1].conv1' is vector (B, 4)", "stage[1].conv2"),
]


def diagnose(text: str, registry, file: str = "spec.yaml") -> SpecError:
    with warnings.catch_warnings():
        warnings.simplefilter("error", SpecWarning)  # none of these cases should get as far as a warning
        with pytest.raises(SpecError) as info:
            archforge.validate(archforge.parse_spec(text, file=file), registry=registry)
    return info.value


def test_the_corpus_is_large_and_unique():
    assert len(CASES) >= 35
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("c", CASES, ids=[c.id for c in CASES])
def test_broken_spec(c: Case, registry):
    error = diagnose(c.text, registry)
    assert error.location is not None and error.location.file == "spec.yaml"
    where = (error.location.line, error.location.column if c.column is not None else None)
    assert where == (c.line, c.column), f"{error}"
    if isinstance(c.message, re.Pattern):
        assert c.message.search(error.message), error.message
    else:
        assert c.message in error.message, error.message
    if c.node is not ANY:
        assert error.node == c.node, f"node {error.node!r} in {error}"
    # A diagnostic is one line that starts with the position.
    assert str(error) == f"spec.yaml:{error.location.line}:{error.location.column}: {error.message}"
    assert len(str(error).splitlines()) == 1


def test_yaml_tag_never_runs_code(tmp_path, registry):
    sentinel = tmp_path / "pwned"
    for tag in ("!!python/object/apply:os.makedirs", "!!python/object/new:os.makedirs"):
        text = f"archforge: 1\nname: t\ninput: {{shape: [3, 8, 8]}}\nnodes:\n  - {{id: a, block: act, args: {{fn: {tag} ['{sentinel}']}}}}\n"
        error = diagnose(text, registry)
        assert (error.location.line, error.location.column) == (5, 36)
        assert error.message == f"refused YAML tag '{tag}': specs may only contain plain data"
    assert not sentinel.exists()


def test_a_name_with_a_line_break_still_gives_one_line(registry):
    error = diagnose('archforge: 1\nname: t\ninput: {shape: [3, 8, 8]}\nnodes:\n  - {"bl\\nock": act}\n', registry)
    assert error.message.startswith("unknown key 'bl\\nock' in node 'nodes[0]'")
    assert len(str(error).splitlines()) == 1


def test_unreachable_node_is_a_warning_not_an_error(registry):
    text = textwrap.dedent("""\
        archforge: 1
        name: t
        input: {shape: [3, 8, 8]}
        nodes:
          - {id: stem, block: conv, args: {channels: 4}}
          - {id: probe, block: conv, in: input, args: {channels: 4}}
          - {id: head, block: classifier, in: stem, args: {classes: 10}}
        """)
    with pytest.warns(SpecWarning) as record:
        graph = archforge.validate(archforge.parse_spec(text, file="spec.yaml"), registry=registry)
    warning = record[0].message
    assert isinstance(warning, SpecWarning)
    assert (warning.location.line, warning.location.column) == (6, 5)
    assert warning.node == "probe"
    assert warning.message == "node 'probe' does not reach the output 'head'"
    assert str(warning) == "spec.yaml:6:5: warning: node 'probe' does not reach the output 'head'"
    assert graph.warnings == [warning]
    assert "probe" not in [node.name for node in graph.live_nodes()]


# ---------------------------------------------------------------------- the command line

def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "archforge", *args], capture_output=True, text=True, timeout=300)


def test_cli_prints_one_compiler_style_line_and_exits_1(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(CASES_BY_ID["error-in-define-body-names-the-instance"].text)
    result = run_cli("validate", str(path))
    assert result.returncode == 1  # what was checked is wrong (2 is for usage errors)
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    assert result.stderr == (
        f"{path}:10:51: define.unit.nodes[1].args.channels: input should be greater than 0 (got 0) in node 'local[0].conv2'\n"
    )


def test_cli_refuses_a_python_tag_without_running_it(tmp_path):
    sentinel = tmp_path / "pwned"
    path = tmp_path / "evil.yaml"
    path.write_text(f"archforge: 1\nname: t\ninput: {{shape: [3, 8, 8]}}\nnodes:\n  - !!python/object/apply:os.makedirs ['{sentinel}']\n")
    result = run_cli("validate", str(path))
    assert result.returncode == 1  # what was checked is wrong (2 is for usage errors)
    assert result.stderr == f"{path}:5:5: refused YAML tag '!!python/object/apply:os.makedirs': specs may only contain plain data\n"
    assert not sentinel.exists()


def test_cli_accepts_a_valid_spec(tmp_path):
    path = tmp_path / "good.yaml"
    path.write_text("archforge: 1\nname: good\ninput: {shape: [3, 8, 8]}\nnodes:\n  - {id: stem, block: conv, args: {channels: 4}}\n")
    result = run_cli("validate", str(path))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert len(lines) == 1 and "ok" in lines[0] and "good" in lines[0]


CASES_BY_ID = {c.id: c for c in CASES}
