"""Hostile input to the command line, output files, checkpoints and the builder: a located error or a clean success.

Organised by the classes of the hardening issue: 4 output files, 8 checkpoints, 9 exit
codes, and the builder's parts of 3 (parameters before allocation) and 5 (blocks whose
``infer`` lies). Every case says in one line why it is there.
"""

from __future__ import annotations

import argparse
import errno
import os
import pickle
import re
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import archforge
from archforge import Block, CheckpointError, SpecError
from archforge.builder import load_checkpoint, save_checkpoint
from archforge.cli import main
from archforge.cli.common import fraction, human, int_range, positive_number
from archforge.files import atomic_output, write_text
from archforge.spec.load import MAX_SPEC_BYTES
from archforge.testing import registry_with

TINY = """\
archforge: 1
name: tiny
input: {shape: [3, 8, 8]}
nodes:
  - {id: stem, block: conv, args: {channels: 4}}
  - {id: head, block: classifier, args: {classes: 2}}
"""
# conv 3→4 3x3 with bias=False + BN (weight, bias) = 108 + 8; classifier 4→2 = 10
TINY_PARAMS = 4 * 3 * 9 + 2 * 4 + 4 * 2 + 2

# 10^6 inputs fully connected to 10^6 outputs: 10^12 weights + 10^6 biases, 4 TB in float32.
BIG = """\
archforge: 1
name: big
input: {shape: [1000000]}
nodes:
  - {id: fc, block: linear, args: {features: 1000000}}
"""


@pytest.fixture
def tiny(tmp_path):
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)
    return path


def cli(capsys, *argv):
    """``main(argv)``: exit status, stdout, stderr."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_error_line(err: str) -> None:
    assert "Traceback" not in err
    assert err.count("\n") == 1 and err.endswith("\n"), err


# =============================================================== class 4: output files


@pytest.mark.parametrize("suffix", [".pt", ".pt2"])
def test_build_into_a_missing_directory_creates_it(tiny, tmp_path, capsys, suffix):
    # Policy: like schema -o and report -o, a missing parent directory is created.
    out = tmp_path / "new" / "deeper" / f"m{suffix}"
    code, stdout, _ = cli(capsys, "build", tiny, "-o", out)
    assert code == 0 and out.is_file() and f"wrote {out}" in stdout


@pytest.mark.parametrize("command", ["build", "graph", "schema"])
def test_a_directory_as_target_is_one_line(tiny, tmp_path, capsys, command):
    # A directory is never replaced or written into.
    target = tmp_path / ("out.mmd" if command == "graph" else "out.pt")
    target.mkdir()
    argv = {"build": ["build", tiny, "-o", target], "graph": ["graph", tiny, "-o", target], "schema": ["schema", "-o", target]}[command]
    code, _, err = cli(capsys, *argv)
    assert code == 1
    assert err == f"error: '{target}': is a directory; give a file name\n"
    assert list(target.iterdir()) == []


@pytest.mark.parametrize("name", ["c.pt", "c.pt2", "c.json", "c.dot"])
def test_a_path_under_a_regular_file_is_one_line(tiny, tmp_path, capsys, name):
    # Tests run as root, which chmod cannot stop: a parent that is a file stands for an unwritable place.
    blocker = tmp_path / "file"
    blocker.write_text("x")
    target = blocker / name
    argv = {".pt": ["build", tiny], ".pt2": ["build", tiny], ".json": ["schema"], ".dot": ["graph", tiny]}[target.suffix]
    code, _, err = cli(capsys, *argv, "-o", target)
    assert code == 1
    assert err == f"error: '{target}': cannot write: '{blocker}' is a file, not a directory\n"
    assert blocker.read_text() == "x"


@pytest.mark.parametrize("argv_of", [
    lambda spec, out: ["build", spec, "-o", out.with_suffix(".pt")],   # checkpoint
    lambda spec, out: ["build", spec, "-o", out.with_suffix(".pt2")],  # exported program
    lambda spec, out: ["schema", "-o", out.with_suffix(".json")],      # editor schema
    lambda spec, out: ["graph", spec, "-o", out.with_suffix(".mmd")],  # diagram
])
def test_an_existing_file_is_kept_unless_force(tiny, tmp_path, capsys, argv_of):
    argv = argv_of(tiny, tmp_path / "out")
    target = argv[argv.index("-o") + 1]
    target.write_bytes(b"precious")
    code, _, err = cli(capsys, *argv)
    assert code == 1
    assert err == f"error: '{target}': already exists; add --force to overwrite\n"
    assert target.read_bytes() == b"precious"
    code, _, err = cli(capsys, *argv, "--force")
    assert code == 0, err
    assert target.read_bytes() != b"precious"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted({"tiny.yaml", target.name})  # no temporary file left


@pytest.mark.parametrize("suffix", [".pt", ".pt2"])
def test_a_full_disk_leaves_the_old_file_and_no_temporary(tiny, tmp_path, capsys, monkeypatch, suffix):
    target = tmp_path / f"m{suffix}"
    target.write_bytes(b"old")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    code, _, err = cli(capsys, "build", tiny, "-o", target, "--force")
    assert code == 1
    assert err == f"error: '{target}': cannot write: No space left on device\n"
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m" + suffix, "tiny.yaml"]


def test_save_checkpoint_refuses_to_overwrite_by_default(tmp_path):
    # The Python default is overwrite=False, like the command line without --force.
    model = archforge.build(archforge.parse_spec(TINY))
    path = tmp_path / "m.pt"
    path.write_bytes(b"old")
    with pytest.raises(FileExistsError, match="already exists; pass overwrite=True to replace it"):
        save_checkpoint(model, path)
    assert path.read_bytes() == b"old"
    save_checkpoint(model, path, overwrite=True)
    assert load_checkpoint(path).state_dict().keys() == model.state_dict().keys()


def test_a_writer_that_fails_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "a.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="exporter broke"):
        with atomic_output(target, overwrite=True) as temp:
            temp.write_text("half")
            raise RuntimeError("exporter broke")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_a_file_created_during_the_write_is_not_replaced(tmp_path):
    # Without overwrite the check holds at the rename too, not only before the work.
    target = tmp_path / "a.txt"
    with pytest.raises(FileExistsError, match="already exists"):
        with atomic_output(target) as temp:
            temp.write_text("new")
            target.write_text("someone else's")
    assert target.read_text() == "someone else's" and [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_a_symlink_target_is_replaced_not_written_through(tmp_path):
    # --force replaces the link itself: nothing is written where the link points.
    outside = tmp_path / "outside.txt"
    outside.write_text("untouched")
    link = tmp_path / "link.txt"
    link.symlink_to(outside)
    with pytest.raises(FileExistsError):
        write_text(link, "new")
    write_text(link, "new", overwrite=True)
    assert outside.read_text() == "untouched" and not link.is_symlink() and link.read_text() == "new"


def test_a_nul_character_in_the_name_is_one_line(tmp_path, capsys):
    # os functions would raise a bare ValueError("embedded null byte").
    code, _, err = cli(capsys, "schema", "-o", str(tmp_path / "a\0b.json"))
    assert code == 1 and err.endswith("a\\0b.json': cannot write: the name contains a NUL character\n")


def test_a_very_long_file_name_keeps_the_temporary_name_short(tmp_path):
    # The temporary name is bounded, so only the target's own name can be too long.
    target = tmp_path / ("n" * 200 + ".txt")
    write_text(target, "x")
    assert target.read_text() == "x"


def test_a_report_of_no_run_is_one_line(tmp_path, capsys):
    # Checked before any output folder is made.
    code, _, err = cli(capsys, "report", tmp_path / "no-run", "-o", tmp_path / "out")
    assert code == 1 and "no search run at" in err
    assert_one_error_line(err)
    assert not (tmp_path / "out").exists()


# =============================================================== class 8: checkpoints


class Evil:
    """Pickled by reference: loading it would call a function of the pickle's choosing."""

    def __reduce__(self):
        return (os.getcwd, ())


def _good(tmp_path):
    path = tmp_path / "good.pt"
    save_checkpoint(archforge.build(archforge.parse_spec(TINY)), path)
    return path


def _saved(tmp_path, data):
    path = tmp_path / "bad.pt"
    torch.save(data, path)
    return path


def _state(tmp_path):
    return archforge.build(archforge.parse_spec(TINY)).state_dict()


def _written(name, data):
    def make(tmp_path):
        path = tmp_path / name
        path.write_bytes(data(tmp_path) if callable(data) else data)
        return path
    return make


CHECKPOINT_CASES = [
    # (id, make(tmp_path) -> path, expected message after "checkpoint '<path>' ")
    ("missing", lambda t: t / "nope.pt", r"does not exist"),  # a typo in the path
    ("directory", lambda t: t, r"is a directory, not a file"),  # a folder given by mistake
    ("empty", _written("e.pt", b""), r"is empty \(0 bytes\)"),  # torch: EOFError without message
    ("not-a-zip", _written("t.pt", b"hello, world\n"), r"is not a PyTorch file: expected the zip archive"),  # any other file
    ("legacy-pickle", _written("p.pt", pickle.dumps({"spec": "x", "state_dict": {}})), r"is not a PyTorch file"),  # raw pickle: never unpickled
    ("truncated", _written("h.pt", lambda t: _good(t).read_bytes()[:600]), r"is truncated or damaged: its zip directory is missing"),  # interrupted copy
    ("zip-not-torch", _written("z.pt", lambda t: _zip_bytes(t)), r"is truncated or damaged: RuntimeError"),  # a zip, but not torch.save's
    ("forbidden-global", lambda t: _saved(t, {"spec": TINY, "state_dict": {}, "x": Evil()}),
     r"is refused: it holds Python objects other than tensors and plain data \(posix\.getcwd\); archforge loads .* never runs code"),
    ("top-level-list", lambda t: _saved(t, [TINY]), r"holds a list, not an archforge checkpoint"),  # not a dict
    ("missing-keys", lambda t: _saved(t, {"spec": TINY}), r"is not an archforge checkpoint: missing 'state_dict'"),  # a bare dict
    ("missing-both", lambda t: _saved(t, {"weights": torch.zeros(1)}), r"missing 'spec' and 'state_dict'"),  # someone else's dict
    ("spec-not-text", lambda t: _saved(t, {"spec": 7, "state_dict": {}}), r"has a int as 'spec', not the spec's YAML text"),
    ("spec-over-cap", lambda t: _saved(t, {"spec": "#" * (MAX_SPEC_BYTES + 1), "state_dict": {}}),
     rf"has a spec of {MAX_SPEC_BYTES + 1:,} characters, more than the {MAX_SPEC_BYTES:,} bytes a spec may have"),  # bounded before parsing
    ("state-not-dict", lambda t: _saved(t, {"spec": TINY, "state_dict": [torch.zeros(1)]}), r"has a list as 'state_dict', not a dict of tensors"),
    ("state-value-not-tensor", lambda t: _saved(t, {"spec": TINY, "state_dict": {"stem.conv.weight": 3}}),
     r"'state_dict' that is not a dict of tensors: the value of key 'stem.conv.weight' is a int$"),
    ("state-key-not-string", lambda t: _saved(t, {"spec": TINY, "state_dict": {1: torch.zeros(1)}}),
     r"'state_dict' that is not a dict of tensors: key 1 is a int, not a string$"),  # the key is wrong, not its tensor
    # load_state_dict would cast these silently: whole numbers as weights, or the imaginary part dropped
    ("integer-weights", lambda t: _saved(t, {"spec": TINY, "state_dict": {**_state(t), "head.fc.weight": torch.ones(2, 4, dtype=torch.int8)}}),
     r"dtype mismatch: 'head\.fc\.weight' is integer \(int8\) in the file, floating \(float32\) in the network; only casts between floating types"),
    ("complex-weights", lambda t: _saved(t, {"spec": TINY, "state_dict": {**_state(t), "head.fc.bias": torch.ones(2, dtype=torch.complex64)}}),
     r"dtype mismatch: 'head\.fc\.bias' is complex \(complex64\) in the file, floating \(float32\) in the network"),
    ("float-counter", lambda t: _saved(t, {"spec": TINY, "state_dict": {**_state(t), "stem.norm.num_batches_tracked": torch.tensor(1.5)}}),
     r"dtype mismatch: 'stem\.norm\.num_batches_tracked' is floating \(float32\) in the file, integer \(int64\) in the network"),
    ("missing-and-unexpected-keys", lambda t: _saved(t, {"spec": TINY, "state_dict": {
        **{k: v for k, v in _state(t).items() if k != "head.fc.bias"}, "extra.weight": torch.zeros(1)}}),
     r"do not fit the network of its spec: missing key 'head\.fc\.bias'; unexpected key 'extra\.weight'"),
    ("shape-mismatch", lambda t: _saved(t, {"spec": TINY, "state_dict": {**_state(t), "head.fc.bias": torch.zeros(3)}}),
     r"shape mismatch: 'head\.fc\.bias' is \[3\] in the file, \[2\] in the network"),  # weights of another width
]


def _bomb(tmp_path):
    # 25 MiB of zeros deflate to about 25 kB: the unpacked size is read from the zip directory, not unpacked.
    path = tmp_path / "bomb.pt"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("archive/data.pkl", b"\0" * (25 * 2**20))
    return path


def test_a_checkpoint_holding_more_than_the_bound_is_refused_unread(tmp_path):
    path = _bomb(tmp_path)
    limit = 8 * 10 + MAX_SPEC_BYTES + 16 * 2**20
    with pytest.raises(CheckpointError, match=rf"holds {25 * 2**20:,} bytes of data, more than a network within max_params can need \({limit:,}\)"):
        load_checkpoint(path, max_params=10)


def test_a_pipe_is_refused_not_read_forever(tmp_path, capsys):
    # Reading a FIFO nobody writes to would block: bounded time means refusing it.
    fifo = tmp_path / "pipe.pt"
    os.mkfifo(fifo)
    with pytest.raises(CheckpointError, match="is not a regular file"):
        load_checkpoint(fifo)
    # Nor is it replaced as an output, --force or not (as /dev/null would be, renamed over).
    code, _, err = cli(capsys, "schema", "-o", fifo, "--force")
    assert code == 1 and err == f"error: '{fifo}': is not a regular file (a device, pipe or socket); refusing to replace it\n"
    assert fifo.is_fifo()


def _zip_bytes(tmp_path):
    path = tmp_path / "plain.zip"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("hello.txt", "hi")
    return path.read_bytes()


@pytest.mark.parametrize("make, expected", [c[1:] for c in CHECKPOINT_CASES], ids=[c[0] for c in CHECKPOINT_CASES])
def test_a_bad_checkpoint_is_one_checkpoint_error(tmp_path, make, expected):
    path = make(tmp_path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert message.startswith(f"checkpoint '{path}' ")
    assert re.search(expected, message), message
    assert "\n" not in message and "weights_only=False" not in message
    assert isinstance(info.value, ValueError)  # what load_checkpoint raised before, still caught by old callers


def test_a_broken_spec_inside_a_checkpoint_is_located_in_it(tmp_path):
    path = _saved(tmp_path, {"spec": TINY.replace("conv", "convv"), "state_dict": {}})
    with pytest.raises(SpecError, match=rf"^{re.escape(str(path))}:spec:5:23: unknown block 'convv'"):
        load_checkpoint(path)


def test_a_checkpoint_over_the_parameter_bound_is_refused_before_loading(tmp_path):
    path = _good(tmp_path)
    with pytest.raises(SpecError, match=rf"would allocate {TINY_PARAMS + 9:,} parameters and buffer elements, more than the bound max_params = 10"):
        load_checkpoint(path, max_params=10)  # BN buffers: running mean, var (4 each), num_batches_tracked (1)


def test_a_good_checkpoint_loads_with_the_same_weights(tmp_path):
    model = archforge.build(archforge.parse_spec(TINY)).eval()
    path = tmp_path / "m.pt"
    save_checkpoint(model, path)
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(load_checkpoint(path).eval()(x), model(x), rtol=0, atol=0)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(min_value=0), flip=st.one_of(st.none(), st.tuples(st.integers(min_value=0), st.integers(1, 255))))
def test_any_truncated_or_corrupted_checkpoint_is_an_error_or_loads(tmp_path_factory, cut, flip):
    # Whatever the damage, a located error or a clean success: never a raw torch exception.
    folder = tmp_path_factory.mktemp("ckpt")
    data = bytearray(_good(folder).read_bytes())
    data = data[: cut % (len(data) + 1)]
    if flip is not None and data:
        data[flip[0] % len(data)] ^= flip[1]
    path = folder / "damaged.pt"
    path.write_bytes(bytes(data))
    try:
        load_checkpoint(path)
    except (CheckpointError, SpecError) as exc:
        assert "\n" not in str(exc) and "weights_only=False" not in str(exc)


# =============================================================== class 9: exit codes

USAGE_ERRORS = [
    (["space", "s.yaml", "-n", "-5"], "a negative number of samples"),
    (["space", "s.yaml", "--check", "-5"], "a negative number of checks"),
    (["space", "s.yaml", "-n", "10000000000"], "a sample count whose loop would not end"),
    (["space", "s.yaml", "--seed", "-1"], "a negative seed"),
    (["space", "s.yaml", "--seed", str(2**32)], "a seed NumPy and Optuna refuse"),
    (["space", "s.yaml", "-n", "two"], "not a number"),
    (["search", "s.yaml", "--budget", "0"], "a budget of nothing"),
    (["search", "s.yaml", "--budget", "-3"], "a negative budget"),
    (["search", "s.yaml", "--max-params", "nan"], "NaN bound"),
    (["search", "s.yaml", "--max-params", "inf"], "infinite bound"),
    (["search", "s.yaml", "--max-params", "-1"], "negative bound"),
    (["search", "s.yaml", "--max-flops", "0"], "zero bound"),
    (["search", "s.yaml", "--proxy-sample", "0"], "a proxy scoring nothing"),
    (["search", "s.yaml", "--proxy-keep", "1.5"], "a fraction over 1"),
    (["search", "s.yaml", "--proxy-keep", "0"], "a fraction that trains nothing"),
    (["search", "s.yaml", "--epochs", "0"], "zero epochs"),
    (["search", "s.yaml", "--seeds", "-2"], "negative seeds per candidate"),
    (["search", "s.yaml", "--seed", "-2"], "negative sampler seed"),
    (["search", "s.yaml", "--limit", "-1"], "negative image limit"),
    (["search", "s.yaml", "--batch-size", "0"], "empty batches"),
    (["search", "s.yaml", "--lr", "nan"], "NaN learning rate"),
    (["search", "s.yaml", "--workers", "0"], "no workers"),
    (["search", "s.yaml", "--workers", "100000"], "a fork bomb"),
    (["search", "s.yaml", "--top", "-1"], "negative ranking rows"),
    (["search", "s.yaml", "--train", "batchsize=64"], "a misspelled training setting"),
    (["search", "s.yaml", "--train", "epochs=3"], "the search's epochs set under train"),
    (["search", "s.yaml", "--train", "lr"], "a training setting without a value"),
    (["search", "s.yaml", "--train", "lr=["], "a value that is not YAML"),
    (["search", "s.yaml", "--evolution", "size=3"], "an unknown evolution setting"),
    (["search", "s.yaml", "--executor", "dask"], "an unknown executor"),
    (["search", "s.yaml", "--val-fraction", "0"], "a validation share of nothing"),
    (["search", "s.yaml", "--pruner", "asha"], "an unknown pruner"),
    (["report", "run", "--top", "-1"], "negative ranking rows"),
    (["build", "s.yaml", "-o", "m.pt", "--max-params", "-1"], "negative parameter bound"),
    (["build", "s.yaml", "-o", "m.pt", "--max-params", "1.5"], "a fractional parameter bound"),
    (["build", "s.yaml"], "no output"),
    (["graph", "s.yaml", "-o", "a.gif"], "an unsupported diagram format"),
    (["validate", "s.yaml", "--frobnicate"], "an unknown flag"),
    (["frobnicate"], "an unknown command"),
    ([], "no command"),
]


@pytest.mark.parametrize("argv", [c[0] for c in USAGE_ERRORS], ids=[c[1] for c in USAGE_ERRORS])
def test_usage_errors_exit_2_before_any_work(tmp_path, monkeypatch, capsys, argv):
    monkeypatch.chdir(tmp_path)  # the files named do not exist: nothing may get as far as reading them
    code, out, err = cli(capsys, *argv)
    assert code == 2
    assert "Traceback" not in err and err.strip()
    if argv:  # one line: a command's usage spans many, --help shows it
        assert err.count("\n") == 1 and ": error: " in err, err
    assert list(tmp_path.iterdir()) == []


def test_help_exits_0(capsys):
    code, out, _ = cli(capsys, "--help")
    assert code == 0 and "--debug" in out


@pytest.mark.parametrize("text, expected", [
    ("archforge: 1\nname: x\ninput: {shape: [3, 8, 8]}\nnodes:\n  - {id: a, block: nope}\n", ":5:20: unknown block 'nope'"),  # a bad spec
    ("archforge: 2\n", ":1:12: unsupported format version 2"),  # another format
    ("a: [\n", ":"),  # not YAML
])
def test_a_bad_spec_exits_1_with_one_located_line(tmp_path, capsys, text, expected):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    for command in (["validate"], ["summary"], ["graph", "-o", tmp_path / "a.dot"], ["build", "-o", tmp_path / "a.pt"]):
        code, out, err = cli(capsys, command[0], path, *command[1:])
        assert code == 1, command
        assert err.startswith(str(path)) and expected in err, err
        assert_one_error_line(err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml"]


def test_a_bad_space_exits_1(tmp_path, capsys):
    path = tmp_path / "space.yaml"
    path.write_text("archforge: 1\nname: s\ninput: {shape: [3, 8, 8]}\nnodes:\n  - {id: a, block: conv, args: {channels: {choice: []}}}\n")
    code, _, err = cli(capsys, "space", path)
    assert code == 1 and err.startswith(f"{path}:5:")
    assert_one_error_line(err)


def test_an_unexpected_exception_is_one_line_and_debug_shows_it(tiny, capsys, monkeypatch):
    import archforge.cli.spec_commands as cli_module

    def broken(args):
        raise KeyError("internal")

    monkeypatch.setattr(cli_module, "cmd_validate", broken)
    code, _, err = cli(capsys, "validate", tiny)
    assert code == 1 and err == "error: KeyError: 'internal' (run with --debug for the traceback)\n"
    with pytest.raises(KeyError):
        main(["--debug", "validate", str(tiny)])


def test_a_plugin_calling_sys_exit_does_not_end_the_command_silently(tiny, capsys, monkeypatch):
    import archforge.cli.spec_commands as cli_module

    def exits(args):
        raise SystemExit(0)

    monkeypatch.setattr(cli_module, "cmd_validate", exits)
    code, _, err = cli(capsys, "validate", tiny)
    assert code == 1 and err.startswith("error: a plugin or library ended the command with sys.exit(0)")


def test_an_os_error_names_its_file(tiny, capsys, monkeypatch):
    import archforge.cli.spec_commands as cli_module

    def denied(args):
        raise PermissionError(errno.EACCES, "Permission denied", "/some/where.db")

    monkeypatch.setattr(cli_module, "cmd_validate", denied)
    code, _, err = cli(capsys, "validate", tiny)
    assert code == 1 and err == "error: '/some/where.db': Permission denied\n"


def test_a_bad_environment_bound_is_one_line(tiny, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ARCHFORGE_MAX_PARAMS", "lots")
    code, _, err = cli(capsys, "build", tiny, "-o", tmp_path / "m.pt")
    assert code == 1 and err == "error: ARCHFORGE_MAX_PARAMS must be a non-negative integer such as 2e9, got 'lots'\n"


def test_an_export_failure_is_one_line_and_writes_nothing(tiny, tmp_path, capsys, monkeypatch):
    def refuses(*args, **kwargs):
        raise RuntimeError("Constraints violated (batch)!\nThe following dims were specialized...\n  - Not all values of batch...")

    monkeypatch.setattr(torch.export, "export", refuses)
    out = tmp_path / "m.pt2"
    code, _, err = cli(capsys, "build", tiny, "-o", out)
    assert code == 1
    assert err == ("error: cannot export 'tiny' (" + str(tiny) + ") with torch.export: RuntimeError: Constraints violated (batch)!; "
                   "a checkpoint (-o m.pt) has no such limits\n")
    assert not out.exists()


def test_the_command_line_never_shows_a_traceback(tiny, tmp_path):
    # End to end, as a user runs it: a runtime error is one line and exit status 1.
    result = subprocess.run([sys.executable, "-m", "archforge", "build", str(tiny), "-o", str(tmp_path)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    assert result.stderr == f"error: '{tmp_path}': is a directory; give a file name\n"
    assert result.stdout == ""


@given(value=st.integers(min_value=-(10**20), max_value=10**20), low=st.integers(0, 3), span=st.one_of(st.none(), st.integers(0, 10**6)))
def test_count_flags_accept_exactly_their_range(value, low, span):
    high = None if span is None else low + span
    parse = int_range(low, high)
    if low <= value and (high is None or value <= high):
        assert parse(str(value)) == value
    else:
        with pytest.raises(argparse.ArgumentTypeError):
            parse(str(value))


@given(value=st.floats(allow_nan=True, allow_infinity=True))
def test_number_flags_accept_only_finite_positive_values(value):
    if value == value and abs(value) != float("inf") and value > 0:
        assert positive_number(repr(value)) == value
        if value <= 1:
            assert fraction(repr(value)) == value
    else:
        with pytest.raises(argparse.ArgumentTypeError):
            positive_number(repr(value))


@given(st.text(max_size=20))
def test_flag_parsers_never_raise_anything_but_a_usage_error(text):
    for parse in (int_range(0), positive_number, fraction):
        try:
            parse(text)
        except argparse.ArgumentTypeError:
            pass


@given(n=st.integers(min_value=1000, max_value=10**40))
def test_human_numbers_are_within_half_a_percent(n):
    text = human(n)
    scale = {"k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18}[text[-1]]
    shown = float(text[:-1].replace(",", "")) * scale
    assert abs(shown - n) <= 0.005 * n


# =============================================================== class 3: parameters before allocation


def test_a_network_over_the_parameter_bound_is_refused_before_allocation(tmp_path, monkeypatch):
    path = tmp_path / "big.yaml"
    path.write_text(BIG)
    allocated = []
    real_empty = torch.empty

    def watch(*args, **kwargs):  # a real (non-meta) weight of the big node would pass through here
        if kwargs.get("device") not in ("meta", torch.device("meta")):
            allocated.append(args)
        return real_empty(*args, **kwargs)

    monkeypatch.setattr(torch, "empty", watch)
    with pytest.raises(SpecError, match=re.escape(
        f"{path}:5:5: network 'big' would allocate 1,000,001,000,000 parameters and buffer elements, more than the bound "
        "max_params = 1,000,000,000 (largest node 'fc': 1,000,001,000,000); raise the bound with archforge.build(..., max_params=N), "
        "'archforge build --max-params N' or ARCHFORGE_MAX_PARAMS=N")):
        archforge.build(path)
    assert not any(1_000_000 in a or (1_000_000, 1_000_000) in a for a in allocated)


def test_the_bound_is_raised_by_argument_flag_or_environment(tiny, tmp_path, capsys, monkeypatch):
    weights = TINY_PARAMS + 9  # BN running mean and var (4 each) and num_batches_tracked
    with pytest.raises(SpecError, match=f"would allocate {weights} parameters"):
        archforge.build(tiny, max_params=weights - 1)
    assert sum(p.numel() for p in archforge.build(tiny, max_params=weights).parameters()) == TINY_PARAMS
    code, _, err = cli(capsys, "build", tiny, "-o", tmp_path / "a.pt", "--max-params", weights - 1)
    assert code == 1 and f"more than the bound max_params = {weights - 1}" in err
    monkeypatch.setenv("ARCHFORGE_MAX_PARAMS", str(weights - 1))
    with pytest.raises(SpecError, match="more than the bound"):
        archforge.build(tiny)
    assert archforge.build(tiny, max_params=weights) is not None  # the argument wins over the environment


def test_summary_of_a_huge_network_counts_exactly(tmp_path, capsys):
    # Nothing is allocated to summarise; counts are exact Python ints, printed without float overflow.
    path = tmp_path / "big.yaml"
    path.write_text(BIG)
    summary = archforge.summarize(path)
    assert summary.params == 10**12 + 10**6
    assert summary.flops == 2 * 10**12
    code, out, _ = cli(capsys, "summary", path)
    assert code == 0 and "params 1,000,001,000,000 · FLOPs 2,000,000,000,000 (1.00T MACs)" in out


def test_a_tensor_too_large_for_int64_is_a_located_error(tmp_path):
    # 2^32 x 2^32 weights overflow torch's int64 storage size: refused with a location (by the graph
    # stage's bounds, or failing that by the meta build), never a crash.
    path = tmp_path / "huge.yaml"
    path.write_text(BIG.replace("1000000", str(2**32)))
    for call in (archforge.summarize, archforge.build):
        with pytest.raises(SpecError, match=rf"^{re.escape(str(path))}:\d+:\d+: "):
            call(path)


# =============================================================== class 5: blocks whose infer lies


class _Liar(Block):
    """Claims to keep the shape but halves the channels."""

    name = "liar"
    layout = "map"

    def infer(self, x, args):
        return x

    def build(self, x, args, *, device=None, dtype=None):
        return nn.Conv2d(x.channels, x.channels // 2, 1, device=device, dtype=dtype)


class _HalveForReal(nn.Module):
    def forward(self, x):
        if x.is_meta:  # stands for an op without a meta kernel
            raise NotImplementedError("no meta kernel")
        return x[:, : x.shape[1] // 2]


class _HiddenLiar(Block):
    """Lies, and cannot be run on the meta device: caught after it is built."""

    name = "hidden_liar"
    layout = "map"

    def infer(self, x, args):
        return x

    def build(self, x, args, *, device=None, dtype=None):
        return _HalveForReal()


class _Raises(nn.Module):
    def forward(self, x):
        raise TypeError("forward() got confused")


class _BadForward(Block):
    name = "bad_forward"
    layout = "map"

    def infer(self, x, args):
        return x

    def build(self, x, args, *, device=None, dtype=None):
        return _Raises()


class _Exits(Block):
    name = "exits"
    layout = "map"

    def infer(self, x, args):
        return x

    def build(self, x, args, *, device=None, dtype=None):
        sys.exit(3)


class _GeneratorExits(Block):
    """A plugin ``build`` raising GeneratorExit (e.g. closing a generator it did not own)."""

    name = "generator_exits"
    layout = "map"

    def infer(self, x, args):
        return x

    def build(self, x, args, *, device=None, dtype=None):
        raise GeneratorExit


class _NoText(Exception):
    def __str__(self) -> str:
        raise RuntimeError("str failed")


class _UnprintableBuild(Block):
    name = "unprintable_build"
    layout = "map"

    def infer(self, x, args):
        return x

    def build(self, x, args, *, device=None, dtype=None):
        raise _NoText()


def _one_node(block: str) -> archforge.Spec:
    return archforge.parse_spec(textwrap.dedent(f"""\
        archforge: 1
        name: one
        input: {{shape: [4, 4, 4]}}
        nodes:
          - {{id: n, block: {block}}}
        """), file="one.yaml")


@pytest.mark.parametrize("block, message", [
    (_Liar, r"^one.yaml:5:5: block 'liar' from plugin 'p' infers \[1, 4, 4, 4\] for node 'n' but its module returns \[1, 2, 4, 4\]$"),
    (_HiddenLiar, r"^one.yaml:5:5: block 'hidden_liar' from plugin 'p' infers \[1, 4, 4, 4\] for node 'n' but its module returns \[1, 2, 4, 4\]$"),
    (_BadForward, r"^one.yaml:5:5: block 'bad_forward' from plugin 'p' failed to run node 'n': TypeError: forward\(\) got confused$"),
    (_Exits, r"^one.yaml:5:5: block 'exits' from plugin 'p' failed to build node 'n': SystemExit: 3$"),
    (_GeneratorExits, r"^one.yaml:5:5: block 'generator_exits' from plugin 'p' failed to build node 'n': GeneratorExit$"),
    (_UnprintableBuild, r"^one.yaml:5:5: block 'unprintable_build' from plugin 'p' failed to build node 'n': _NoText$"),
])
def test_build_checks_each_block_against_its_infer(block, message):
    registry = registry_with(block, name="p")
    with pytest.raises(SpecError, match=message):
        archforge.build(_one_node(block.name), registry=registry)
    with pytest.raises(SpecError, match=message):
        archforge.summarize(_one_node(block.name), registry=registry)


# =============================================================== one description of an exception

def test_describe_exception_is_one_bounded_line_and_never_raises():
    from archforge.errors import describe_exception

    assert describe_exception(ValueError("first\n\n  second")) == "ValueError: first"
    assert describe_exception(ValueError("x" * 1000), 10) == "ValueError: " + "x" * 9 + "…"
    assert describe_exception(_NoText()) == "_NoText"  # its __str__ raises: the type name
    assert describe_exception(_NoText(), named=False) == "_NoText"
    assert describe_exception(GeneratorExit()) == "GeneratorExit"
    assert describe_exception(RuntimeError("use weights_only=False\nreal reason"), keep=lambda line: "weights_only" not in line) == "RuntimeError: real reason"


def test_a_generator_exit_in_a_command_is_one_line(tiny, capsys, monkeypatch):
    import archforge.cli.spec_commands as cli_module

    def closes(args):
        raise GeneratorExit

    monkeypatch.setattr(cli_module, "cmd_summary", closes)
    code, _, err = cli(capsys, "summary", tiny)
    assert code == 1 and err == "error: GeneratorExit (run with --debug for the traceback)\n"


def test_summary_of_a_plugin_raising_generator_exit_is_one_located_line(tiny, capsys, monkeypatch):
    registry = registry_with(_GeneratorExits, name="p")
    real = archforge.summarize
    monkeypatch.setattr(archforge, "summarize", lambda spec: real(spec, registry=registry))
    path = tiny.with_name("gen.yaml")
    path.write_text(TINY.replace("block: conv, args: {channels: 4}", "block: generator_exits"))
    code, _, err = cli(capsys, "summary", path)
    assert code == 1 and err == f"{path}:5:5: block 'generator_exits' from plugin 'p' failed to build node 'stem': GeneratorExit\n"


# =============================================================== settings are not block bugs

@pytest.mark.parametrize("device, message", [
    ("nope", r"^device 'nope' is not a torch device \(RuntimeError: .*\); use e\.g\. 'cpu', 'cuda', 'cuda:0' or 'mps'$"),
    pytest.param("cuda", r"^device 'cuda' is not available: this torch has no CUDA|no CUDA GPU is visible",
                  marks=pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")),
    ("cuda:99" if torch.cuda.is_available() else "cuda:0", r"^device 'cuda:(99|0)' is not available: "),
])
def test_an_unusable_device_is_a_setting_error_not_a_block_bug(tmp_path, device, message):
    from archforge.errors import SettingError

    with pytest.raises(SettingError, match=message):
        archforge.build(archforge.parse_spec(TINY), device=device)
    with pytest.raises(SettingError, match=message):
        load_checkpoint(_good(tmp_path), device=device)


@pytest.mark.parametrize("dtype", [torch.int64, torch.complex64, "float32", torch.bool])
def test_a_dtype_that_is_not_floating_is_a_setting_error(dtype):
    from archforge.errors import SettingError

    with pytest.raises(SettingError, match=r"^dtype must be a floating torch\.dtype such as torch\.float32"):
        archforge.build(archforge.parse_spec(TINY), dtype=dtype)


def test_a_bad_device_on_the_command_line_path_is_one_line(tiny, capsys):
    code, _, err = cli(capsys, "build", tiny, "--device", "nope", "-o", tiny.with_suffix(".pt"))
    assert code == 1 and err.startswith("error: device 'nope' is not a torch device") and "plugin" not in err
    assert_one_error_line(err)


def test_a_nul_character_in_a_checkpoint_name_is_a_checkpoint_error():
    with pytest.raises(CheckpointError, match=r"^checkpoint 'a\\0b\.pt' cannot be read: the name contains a NUL character$"):
        load_checkpoint("a\0b.pt")


def test_half_precision_weights_load_cast_to_the_network(tmp_path):
    model = archforge.build(archforge.parse_spec(TINY)).eval()
    state = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    path = _saved(tmp_path, {"spec": TINY, "state_dict": state})
    loaded = load_checkpoint(path)
    assert loaded.head.fc.weight.dtype == torch.float32
    torch.testing.assert_close(loaded.head.fc.weight, model.head.fc.weight.half().float(), rtol=0, atol=0)


def test_save_checkpoint_passes_the_callers_overwrite_hint(tmp_path, tiny, capsys, monkeypatch):
    import archforge.files

    path = _good(tmp_path)
    with pytest.raises(FileExistsError) as info:
        save_checkpoint(archforge.build(archforge.parse_spec(TINY)), path, hint="say --yes")
    assert info.value.strerror == "already exists; say --yes"
    # a file that appears while the network is built: refused by save_checkpoint itself, in the CLI's words
    monkeypatch.setattr(archforge.files, "check_target", lambda target, **kwargs: Path(target))
    code, _, err = cli(capsys, "build", tiny, "-o", path)
    assert code == 1 and err == f"error: '{path}': already exists; add --force to overwrite\n"


class _ShadowedConv(Block):
    """A plugin block named like a built-in: the schema offers it as 'p:conv' besides the built-in 'conv'."""

    name = "conv"
    layout = "map"

    def infer(self, x, args):
        return x

    def build(self, x, args, *, device=None, dtype=None):
        return nn.Identity()


def test_schema_counts_the_block_names_it_offers(tmp_path, capsys, monkeypatch):
    import archforge.registry
    from archforge.errors import PluginWarning

    with pytest.warns(PluginWarning, match="has the name of a built-in block"):
        registry = registry_with(_ShadowedConv, name="p")
    monkeypatch.setattr(archforge.registry, "default_registry", lambda: registry)
    assert "p:conv" in registry.qualified and registry.blocks["conv"].plugin.name != "p"
    code, out, _ = cli(capsys, "schema", "-o", tmp_path / "s.json")
    assert code == 0 and out.endswith(f"with the args of {len(registry.names()) + 1} block names\n")
