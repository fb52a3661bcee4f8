"""The bundled models and search spaces by name: the catalog, the resolution rule, its errors, ``archforge models``, the wheel."""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, SPECS

import archforge
from archforge import SpecError, load_spec
from archforge.search import load_space
from archforge.spec import bundled_path, list_models, resolve_source
from archforge.spec.zoo import is_path_like

MODEL_FILES = sorted(SPECS.glob("models/*.yaml"))
SPACE_FILES = sorted(SPECS.glob("spaces/*.yaml"))

LOCAL_SPEC = """\
archforge: 1
name: local_copy
input: {shape: [4]}
nodes:
  - {id: head, block: linear, args: {features: 2}}
"""


# --------------------------------------------------------------------------- the catalog


def test_the_catalog_is_the_zoo_folders():
    assert list_models() == [f.stem for f in MODEL_FILES]
    assert list_models(spaces=True) == [f.stem for f in SPACE_FILES]
    assert len(MODEL_FILES) >= 16 and len(SPACE_FILES) >= 3


@pytest.mark.parametrize(("pattern", "names"), [
    ("convit*", ["convit_base", "convit_micro_28", "convit_micro_32", "convit_small", "convit_tiny"]),
    ("resnet?8", ["resnet18"]),
    ("*_224", ["deit_tiny_patch16_224", "vit_base_patch16_224"]),
    ("resnet_micro_[0-9][0-9]", ["resnet_micro_28", "resnet_micro_32"]),
    ("resnet50", ["resnet50"]),
    ("ConViT*", []),  # case-sensitive, the same on every OS
    ("nothing*", []),
])
def test_list_models_patterns(pattern, names):
    assert list_models(pattern) == names


def test_list_models_spaces_patterns():
    assert list_models("*mnist", spaces=True) == ["cnn_mnist", "convit_mnist", "placement_mnist"]
    assert list_models("convit*", spaces=True) == ["convit_mnist"]


@pytest.mark.parametrize("path", MODEL_FILES, ids=lambda p: p.stem)
def test_every_bundled_model_by_name_is_its_file(path):
    by_name, by_path = load_spec(path.stem), load_spec(path)
    assert by_name.to_dict() == by_path.to_dict()
    assert by_name.name == yaml.safe_load(path.read_text())["name"]
    assert Path(by_name.file).samefile(path)  # errors are located in the real file, which an editor opens


@pytest.mark.parametrize("path", SPACE_FILES, ids=lambda p: p.stem)
def test_every_bundled_space_by_name_is_its_file(path):
    by_name = load_space(path.stem)
    assert by_name.text == path.read_text()
    assert Path(by_name.file).samefile(path)
    assert list(by_name.decisions) == list(load_space(path).decisions)


def test_build_and_validate_take_names():
    graph = archforge.validate("resnet_micro_28")
    assert graph.name == "resnet_micro_28"
    model = archforge.build("resnet_micro_28", device="meta")
    assert sum(p.numel() for p in model.parameters()) == 77_754  # docs/gallery.md


def test_errors_in_a_bundled_spec_are_located_in_its_file():
    spec = load_spec("convit_tiny")
    location = spec.document.locate(("nodes", 0))
    assert Path(location.file).samefile(SPECS / "models" / "convit_tiny.yaml")
    assert location.line > 1


def test_bundled_path():
    assert bundled_path("resnet50").samefile(SPECS / "models" / "resnet50.yaml")
    assert bundled_path("cnn_mnist", "search space").samefile(SPECS / "spaces" / "cnn_mnist.yaml")
    with pytest.raises(SpecError, match=r"^no bundled model 'resnet5' \(did you mean 'resnet50'\?\)"):
        bundled_path("resnet5")
    with pytest.raises(SpecError, match=r"^no bundled search space 'resnet50'"):
        bundled_path("resnet50", "search space")


# --------------------------------------------------------------------------- the resolution rule


@pytest.mark.parametrize(("source", "path_like"), [
    ("convit_tiny", False),
    ("my-net.v2", False),
    ("./convit_tiny", True),
    ("models/convit_tiny", True),
    ("convit_tiny.yaml", True),
    ("convit_tiny.YML", True),
    ("", True),
    ("a\0b", True),
    (Path("convit_tiny"), True),
])
def test_what_is_written_as_a_path(source, path_like):
    assert is_path_like(source) is path_like


def test_a_bare_bundled_name_wins_over_a_file_of_that_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "convit_tiny").write_text(LOCAL_SPEC)
    assert load_spec("convit_tiny").name == "convit_tiny"
    assert load_spec("./convit_tiny").name == "local_copy"
    assert load_spec(Path("convit_tiny")).name == "local_copy"
    assert load_spec(os.path.join(tmp_path, "convit_tiny")).name == "local_copy"


def test_a_bare_word_that_is_no_bundled_name_is_a_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mynet").write_text(LOCAL_SPEC)
    (tmp_path / "convit_tiny.yaml").write_text(LOCAL_SPEC)
    assert load_spec("mynet").name == "local_copy"
    assert load_spec("convit_tiny.yaml").name == "local_copy"
    assert resolve_source("mynet", "spec") == "mynet"
    assert Path(resolve_source("convit_tiny", "spec")).samefile(SPECS / "models" / "convit_tiny.yaml")


def test_a_local_file_named_like_a_bundled_space_is_read_as_a_spec(tmp_path, monkeypatch):
    # Names are looked up among bundled files of the kind asked for only: a file wins over the other kind's name.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "placement_mnist").write_text(LOCAL_SPEC)
    assert load_spec("placement_mnist").name == "local_copy"


# --------------------------------------------------------------------------- errors


def _error(call, *args) -> SpecError:
    with pytest.raises(SpecError) as info:
        call(*args)
    return info.value


def test_an_unknown_name_says_what_was_looked_for(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exc = _error(load_spec, "convit_tiy")
    assert str(exc) == ("convit_tiy:1:1: cannot read spec: no file 'convit_tiy' and no bundled model of that name "
                        "(did you mean 'convit_tiny'?)")
    exc = _error(load_space, "placment_mnist")
    assert str(exc) == ("placment_mnist:1:1: cannot read search space: no file 'placment_mnist' and no bundled "
                        "search space of that name (did you mean 'placement_mnist'?)")
    assert _error(load_spec, "zzzz").message == "cannot read spec: no file 'zzzz' and no bundled model of that name"


def test_a_model_where_a_space_is_expected(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exc = _error(load_space, "resnet50")
    assert exc.message == ("cannot read search space: 'resnet50' is a bundled model, not a search space "
                           "(the bundled search spaces are cnn_mnist, convit_mnist, placement_grid, placement_mnist)")
    exc = _error(load_spec, "placement_mnist")
    assert exc.message.startswith("cannot read spec: 'placement_mnist' is a bundled search space, not a model "
                                  "(search it with `archforge search placement_mnist`")
    assert exc.location is not None and exc.location.file == "placement_mnist"


def test_a_missing_copy_of_a_bundled_file_points_to_the_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exc = _error(load_spec, "specs/models/resnet50.yaml")
    assert exc.message == ("cannot read spec: no file 'specs/models/resnet50.yaml'; the bundled model of that name "
                           "is read by its name alone: 'resnet50'")
    assert _error(load_space, "cnn_mnist.yaml").message.endswith("read by its name alone: 'cnn_mnist'")
    assert "No such file" in _error(load_spec, "mynet.yaml").message  # not a bundled name: the OS's words


def test_cli_errors_are_located(tmp_path, monkeypatch, capsys):
    from archforge.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["summary", "resnet5"]) == 1
    assert capsys.readouterr().err.strip() == ("resnet5:1:1: cannot read spec: no file 'resnet5' and no bundled model "
                                               "of that name (did you mean 'resnet50'?)")
    assert main(["space", "resnet18"]) == 1
    assert "is a bundled model, not a search space" in capsys.readouterr().err


# --------------------------------------------------------------------------- archforge models


def _models(argv: list[str]) -> int:
    """``archforge models ARGV``; its exit status."""
    from archforge.cli import main

    return main(["models", *argv])


def _table_rows(text: str) -> dict[str, list[str]]:
    """The rows of a printed table, by the name in their first cell."""
    rows = {}
    for line in text.splitlines():
        cells = line.split()
        if cells and cells[0] in list_models() + list_models(spaces=True):
            rows[cells[0]] = cells
    return rows


# Parameter counts of the reference implementations (timm / torchvision, 1000 classes).
REFERENCE_PARAMS = {
    "resnet50": 25_557_032,
    "resnet18": 11_689_512,
    "deit_tiny_patch16_224": 5_717_416,
    "convit_tiny": 5_710_512,
}


@pytest.mark.parametrize(("name", "params"), REFERENCE_PARAMS.items())
def test_models_table_params_are_the_reference_counts(name, params, monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "200")
    assert _models([name]) == 0
    row = _table_rows(capsys.readouterr().out)[name]
    assert row[1] == f"{params:,}"
    assert row[3] == "3×224×224"


def test_models_json(capsys):
    assert _models(["resnet18*", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == ["resnet18", "resnet18_sagan"]
    first = rows[0]
    assert first["params"] == 11_689_512
    assert first["input"] == [3, 224, 224] and first["output"] == [1000]
    assert first["flops"] == 2 * first["macs"]
    assert first["description"] == yaml.safe_load((SPECS / "models" / "resnet18.yaml").read_text())["description"]
    assert Path(first["file"]).samefile(SPECS / "models" / "resnet18.yaml")


def test_models_table_fits_80_columns(monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "80")
    assert _models(["resnet*"]) == 0
    out = capsys.readouterr().out
    assert max(len(line.rstrip()) for line in out.splitlines()) <= 80
    assert set(_table_rows(out)) == set(list_models("resnet*"))
    assert "description" in out and "(v1.5)" in out  # resnet50's description, wrapped but whole


def test_models_spaces(monkeypatch, capsys):
    assert _models(["--spaces", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    # cnn_mnist: width (4 values) × kernel 3..7 step 2 (3) × shared depth 1..3 (3) × dropout 0..0.5 step 0.1 (6)
    # placement_mnist and placement_grid: the block of each of 3 stages, 2 options each; convit_mnist: `local` of 5 values.
    assert {n: (r["decisions"], r["assignments"]) for n, r in rows.items()} == {
        "cnn_mnist": (4, 4 * 3 * 3 * 6), "convit_mnist": (1, 5), "placement_grid": (3, 8), "placement_mnist": (3, 8),
    }
    monkeypatch.setenv("COLUMNS", "80")
    assert _models(["--spaces"]) == 0
    out = capsys.readouterr().out
    assert _table_rows(out)["placement_mnist"][1:3] == ["3", "8"]
    assert max(len(line.rstrip()) for line in out.splitlines()) <= 80


def test_a_model_that_cannot_be_measured_keeps_its_row(monkeypatch, capsys):
    measure = archforge.summarize

    def summarize(spec, **kwargs):
        if spec.name == "resnet18":
            raise SpecError("unknown block 'halo'", archforge.Location("resnet18.yaml", 3, 4))
        return measure(spec, **kwargs)

    monkeypatch.setattr(archforge, "summarize", summarize)
    monkeypatch.setenv("COLUMNS", "200")
    assert _models(["resnet18*"]) == 1
    captured = capsys.readouterr()
    rows = _table_rows(captured.out)
    assert rows["resnet18"][1:5] == ["—", "—", "—", "ResNet-18"]
    assert rows["resnet18_sagan"][1] == "11,791,914"
    assert captured.err.strip() == "resnet18.yaml:3:4: unknown block 'halo'"


def test_the_command_module_imports_nothing_heavy():
    # `archforge --help` imports every command module: torch and the search stay out until a command runs.
    code = "import sys, archforge.cli.model_commands; print(sorted({'torch', 'optuna'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60).stdout
    assert out.strip() == "[]"


def test_models_without_a_match(capsys):
    assert _models(["nothing*"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.strip() == "error: no bundled model matches 'nothing*' (`archforge models` lists them all)"


# --------------------------------------------------------------------------- the wheel


def _setuptools_too_old() -> str | None:
    """Why this environment cannot build the wheel offline (without build isolation), or None when it can."""
    try:
        version = importlib.metadata.version("setuptools")
    except importlib.metadata.PackageNotFoundError:
        return "setuptools is not installed in this environment (the wheel is built offline, without build isolation)"
    if int(version.split(".")[0]) < 77:  # pyproject's build-system.requires: license = "Apache-2.0" needs 77
        return f"setuptools {version} is older than pyproject's build-system.requires (setuptools>=77)"
    return None


@pytest.mark.skipif(_setuptools_too_old() is not None, reason=str(_setuptools_too_old()))
def test_the_wheel_ships_the_zoo(tmp_path):
    # Built from a copy of what the build reads (and of the plugins, whose files must stay out):
    # an in-tree build would leave build/ and an .egg-info in the checkout.
    source = tmp_path / "source"
    skip = shutil.ignore_patterns("__pycache__", "*.egg-info", "build", "dist")
    for part in ("archforge", "plugins"):
        shutil.copytree(ROOT / part, source / part, ignore=skip)
    for file in [ROOT / "pyproject.toml", ROOT / "README.md", *ROOT.glob("LICEN[CS]E*")]:
        shutil.copy2(file, source / file.name)
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--disable-pip-version-check",
                            "--quiet", "-w", str(tmp_path / "dist"), str(source)], capture_output=True, text=True, timeout=120)
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("archforge_nn-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for path in MODEL_FILES + SPACE_FILES:
        assert path.relative_to(ROOT).as_posix() in names
    assert not [n for n in names if "halonet" in n]
    assert (ROOT / "plugins" / "archforge-halo" / "specs" / "halonet_tiny.yaml").is_file()
