"""Hardening of names and quoted values in the spec stage: define names, paths, long integers, short values.

Each case is a whole spec; line and column are those of the offending text, counted by hand
(line 1 is the first line of the string). Every failure is one located :class:`SpecError`.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

import archforge
from archforge import SpecError, SpecWarning
from archforge.spec.text import short_value, type_name

HEAD = "archforge: 1\nname: t\ninput: {shape: [3, 4, 4]}\n"
IDENTIFIER_HINT = "is not a valid name: use letters, digits and '_', not starting with a digit"


def parse_error(text: str) -> SpecError:
    with pytest.raises(SpecError) as info:
        archforge.parse_spec(text, file="spec.yaml")
    return info.value


# --- define names are identifiers ------------------------------------------------------------

BAD_DEFINE_NAMES = [
    ("'builtin:conv'", "'builtin:conv'", "a qualified block name would replace the built-in"),
    ("'halo:attn'", "'halo:attn'", "any plugin's qualified name"),
    ("a b", "'a b'", "a space: no node could write it"),
    ("9x", "'9x'", "a leading digit"),
    ("'a-b'", "'a-b'", "a dash"),
    ("'$p'", "'$p'", "a $param look-alike"),
]


@pytest.mark.parametrize("key, shown, reason", BAD_DEFINE_NAMES, ids=[c[2] for c in BAD_DEFINE_NAMES])
def test_a_define_name_that_is_not_an_identifier_is_refused_at_the_key(key, shown, reason):
    text = HEAD + f"define:\n  ok:\n    nodes:\n      - {{block: identity}}\n  {key}:\n    nodes:\n      - {{block: identity}}\nnodes:\n  - {{block: identity}}\n"
    error = parse_error(text)
    assert str(error) == f"spec.yaml:8:3: define {shown} {IDENTIFIER_HINT}", reason


def test_a_qualified_block_name_reaches_the_block_even_with_defines_around():
    # Before, a define called 'builtin:conv' was taken instead of the built-in.
    text = HEAD + "define:\n  unit:\n    nodes:\n      - {block: identity}\nnodes:\n  - {id: c, block: 'builtin:conv', args: {channels: 8}}\n"
    graph = archforge.validate(archforge.parse_spec(text))
    assert graph.nodes["c"].entry.qualified_name == "builtin:conv"


def test_a_define_name_given_as_a_non_string_in_a_dict_is_one_located_error():
    data = {"archforge": 1, "name": "t", "input": {"shape": [3]}, "define": {1: {"nodes": [{"block": "relu"}]}}, "nodes": [{"block": "relu"}]}
    with pytest.raises(SpecError, match=r"^<dict>:1:1: define 1: input should be a valid string$"):
        archforge.Spec.from_dict(data)


def test_a_define_named_like_a_registered_block_warns_at_the_define_key():
    text = HEAD + "define:\n  conv:\n    nodes:\n      - {block: identity}\nnodes:\n  - {id: c, block: conv}\n"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        graph = archforge.validate(archforge.parse_spec(text, file="spec.yaml"))
    mine = [w.message for w in caught if isinstance(w.message, SpecWarning)]
    assert [str(w) for w in mine] == [
        "spec.yaml:5:3: warning: define 'conv' hides the block 'conv' (from 'archforge-nn'): nodes writing 'conv' get the define; "
        "rename the define, or write 'builtin:conv' for the block"]
    assert [str(w) for w in graph.warnings] == [str(w) for w in mine]


# --- a path with a NUL character ---------------------------------------------------------------

@pytest.mark.parametrize("source", ["a\0b", Path("dir\0/spec.yaml")], ids=["str", "Path"])
def test_a_path_with_a_nul_character_is_a_located_error_not_a_value_error(source):
    with pytest.raises(SpecError) as info:
        archforge.load_spec(source)
    error = info.value
    assert error.message == "cannot read spec: the path contains a NUL character"
    assert (error.location.line, error.location.column) == (1, 1)
    assert "\0" not in str(error), "the NUL is shown escaped"


# --- integers longer than Python's int() takes --------------------------------------------------

TOO_LARGE = "is too large: spec numbers are at most 1e+18 in magnitude (archforge.spec.expressions.MAX_NUMBER)"

LONG_INTEGERS = [
    ("1" * 4301, "one digit over Python's 4300-digit limit"),
    ("9" * 100_000, "far over it"),
    ("-" + "1" * 5000, "negative"),
    ("1_" * 4400 + "1", "underscores do not hide digits"),
    ("1" * 20, "short, but over MAX_NUMBER"),
    ("!!int '" + "7" * 5000 + "'", "an explicit !!int tag"),
]


@pytest.mark.parametrize("number, reason", LONG_INTEGERS, ids=[c[1] for c in LONG_INTEGERS])
def test_an_integer_of_any_length_over_max_number_gets_the_max_number_message(number, reason):
    error = parse_error(HEAD + f"params:\n  n: {number}\nnodes:\n  - {{block: identity}}\n")
    assert (error.location.line, error.location.column) == (5, 6), reason
    assert error.message.startswith("number '") and error.message.endswith(TOO_LARGE), error.message
    assert "set_int_max_str_digits" not in error.message
    assert len(error.message) < 200


def test_a_long_integer_as_a_mapping_key_is_refused_as_a_key():
    # YAML allows a plain key over 1024 characters only as an explicit '? key'.
    error = parse_error(HEAD + "params:\n  ? " + "1" * 5000 + "\n  : 3\nnodes:\n  - {block: identity}\n")
    assert (error.location.line, error.location.column) == (5, 5)
    assert error.message == f"mapping key {short_value('1' * 5000)} is read as a number, not a name: quote it"


@pytest.mark.parametrize("number, value", [
    ("1000000000000000000", 10**18),  # exactly MAX_NUMBER
    ("-000_1", None),  # refused as octal-looking below, not as long
    ("0x" + "0" * 5000 + "1F", 31),  # leading zeros are not digits that count, and hex has no int() limit
    ("0b" + "0" * 5000 + "101", 5),
])
def test_integers_within_max_number_are_read_whatever_their_spelling(number, value):
    text = HEAD + f"params:\n  n: {number}\nnodes:\n  - {{block: identity}}\n"
    if value is None:
        assert "octal number" in parse_error(text).message
    else:
        assert archforge.parse_spec(text).params["n"] == value


# --- one short_value and one type_name for every diagnostic ------------------------------------

def test_a_cut_string_keeps_its_closing_quote_and_the_width():
    assert short_value("x" * 100) == "'" + "x" * 35 + "...'"
    assert len(short_value("x" * 100)) == 40
    assert short_value("x" * 38) == "'" + "x" * 38 + "'"  # 40 characters: not cut
    assert short_value("it's " * 20) == '"' + ("it's " * 7)[:35] + '..."'  # the quote repr chose


def test_a_cut_string_never_splits_an_escape():
    text = short_value("\0" * 50)
    assert text == "'" + "\\x00" * 8 + "...'"
    assert short_value("\U0001f600" * 40, width=20) == "'" + "\U0001f600" * 15 + "...'"


def test_short_value_of_other_values():
    assert short_value(10**50) == "1" + "0" * 36 + "..."
    assert short_value([1, 2]) == "a list" and short_value({"a": 1}) == "a mapping"
    assert short_value(None) == "None" and short_value(True) == "True"


@pytest.mark.parametrize("value, name", [
    ({}, "a mapping"), ([], "a list"), ("x", "a string"), (True, "a boolean"), (1, "a number"), (1.5, "a number"),
    (None, "null"), (__import__("datetime").date(2001, 12, 14), "a date"), (b"x", "a bytes"),
])
def test_type_name(value, name):
    assert type_name(value) == name


def test_a_long_invalid_value_is_quoted_with_its_closing_quote_in_spec_errors():
    error = parse_error("archforge: 1\nname: '" + "a-" * 40 + "'\ninput: {shape: [3]}\nnodes:\n  - {block: identity}\n")
    assert error.message.endswith("(got '" + "a-" * 17 + "a...')"), error.message


def test_a_long_yaml_oddity_is_quoted_with_its_closing_quote():
    error = parse_error(HEAD + "params:\n  n: 0" + "7" * 60 + "\nnodes:\n  - {block: identity}\n")
    assert error.message.startswith("'0" + "7" * 34 + "...' is an octal number in YAML 1.1"), error.message


def test_a_top_level_value_that_is_not_a_mapping_is_named_with_its_article():
    assert parse_error("- a\n").message == "a spec must be a mapping of keys (archforge, name, input, nodes, ...), got a list"
    assert parse_error("hello\n").message == "a spec must be a mapping of keys (archforge, name, input, nodes, ...), got a string"
