import warnings
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SPECS = ROOT / "archforge" / "zoo"  # the bundled models and search spaces


def load_plain_networks():
    """``benchmarks/plain_networks.py``: the reference networks written plainly (timm / torchvision style)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("plain_networks", ROOT / "benchmarks" / "plain_networks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture
def spec_file(tmp_path):
    """Write YAML text to a file and return its path."""

    def write(text: str, name: str = "spec.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return write
