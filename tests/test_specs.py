"""Every spec shipped in archforge/zoo/models validates, builds, runs forward and backward, and its summary agrees."""

import warnings

import pytest
import torch

import archforge
from conftest import SPECS

MODEL_SPECS = sorted((SPECS / "models").glob("*.yaml"))


@pytest.mark.parametrize("path", MODEL_SPECS, ids=[p.stem for p in MODEL_SPECS])
def test_model_spec_validates_builds_and_trains(path):
    with warnings.catch_warnings():
        warnings.simplefilter("error", archforge.SpecWarning)  # shipped specs have no dead nodes
        graph = archforge.validate(path)
    model = archforge.build(graph)
    summary = archforge.summarize(graph)
    assert summary.params == sum(p.numel() for p in model.parameters())
    batch = 2 if graph.input.channels * graph.input.height * graph.input.width <= 3 * 64 * 64 else 1
    x = graph.input.example(batch)
    model.train(batch > 1)  # batch norm cannot train on a single sample
    out = model(x)
    assert tuple(out.shape) == (batch, *graph.output_shape.dims())
    out.float().square().mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads), "every parameter gets a finite gradient"
