"""Importing archforge, and running a search from Python, leave the process as it was: warnings, logging, backends."""

from __future__ import annotations

import subprocess
import sys
import textwrap

SNAPSHOT = """
import logging, sys, warnings
def snapshot():
    import optuna, torch
    handlers = {name: [(type(h).__name__, h.level, tuple(h.filters)) for h in logging.getLogger(name).handlers]
                for name in ("", "optuna")}
    return {
        "filters": list(warnings.filters), "showwarning": warnings.showwarning, "unraisablehook": sys.unraisablehook,
        "optuna_level": optuna.logging.get_verbosity(), "root_level": logging.getLogger().level, "handlers": handlers,
        "torch_threads": torch.get_num_threads(), "grad": torch.is_grad_enabled(),
        "matplotlib_backend": sys.modules["matplotlib"].get_backend() if "matplotlib" in sys.modules else None,
    }
"""


def run(body: str) -> subprocess.CompletedProcess:
    code = SNAPSHOT + textwrap.dedent(body)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


def test_importing_every_search_module_changes_no_global_state():
    done = run("""
        import matplotlib
        before = snapshot()
        import archforge, archforge.cli, archforge.search
        import importlib, pkgutil
        package = sys.modules["archforge.search"]
        for module in pkgutil.iter_modules(package.__path__):
            importlib.import_module(f"archforge.search.{module.name}")
        after = snapshot()
        changed = {k for k in before if before[k] != after[k]}
        assert not changed, changed
        print("same")
    """)
    assert done.returncode == 0 and "same" in done.stdout, done.stderr


def test_a_search_from_python_restores_what_it_changed(tmp_path):
    done = run(f"""
        import matplotlib, types
        before = snapshot()
        import archforge
        from archforge.search.space import parse_space
        space = parse_space('''
        archforge: 1
        name: state
        input: {{shape: [1, 8, 8]}}
        params: {{width: {{choice: [4, 8]}}}}
        nodes:
          - {{id: stem, block: conv, args: {{channels: $width}}}}
          - {{id: head, block: classifier, args: {{classes: 10}}}}
        ''')
        def fake(spec, data, config, on_epoch=None):
            return dict(accuracy=0.5, epochs=config.epochs, history=[0.5], params=1, flops=1)
        data = types.SimpleNamespace(input_shape=(1, 8, 8), num_classes=10, name="fake")
        result = archforge.search(space, dataset=data, evaluator=fake, storage={str(tmp_path / "s.db")!r}, epochs=1, progress=False)
        assert len(result.table) == 2, result.table
        after = snapshot()
        changed = {{k for k in before if before[k] != after[k]}}
        assert not changed, (changed, before, after)
        print("same")
    """)
    assert done.returncode == 0 and "same" in done.stdout, done.stderr
