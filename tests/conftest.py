"""Shared fixtures: every test runs once per CPU kernel path this machine has
(the `isa` fixture), with fresh random inputs (the `rng` fixture prints its
seed on failure), plus helpers for strided NaN-gapped views and poisoned
outputs."""

from __future__ import annotations

import os
import random

import pytest
import torch

import fastnn
from fastnn import _C

_ORDER = ["generic", "avx2", "avx512"]
ISAS = _ORDER[: _ORDER.index(_C.isa_detected()) + 1]
HAS_CUDA = torch.cuda.is_available() and fastnn.info()["gpus"] != []


def pytest_configure(config):
    config.addinivalue_line("markers", "single_isa: the test does not depend on the CPU kernel path")


def pytest_generate_tests(metafunc):
    if "isa" in metafunc.fixturenames and not metafunc.definition.get_closest_marker("single_isa"):
        metafunc.parametrize("isa", ISAS, indirect=True)


@pytest.fixture(autouse=True)
def isa(request):
    """Runs the test on one CPU kernel path, restoring the previous one after."""
    previous = _C.isa_active()
    name = getattr(request, "param", previous)
    _C.set_isa(name)
    yield name
    _C.set_isa(previous)


@pytest.fixture
def rng(request):
    """A torch.Generator with a fresh seed, reported when the test fails."""
    seed = random.SystemRandom().randrange(2**31)
    request.node.user_properties.append(("seed", seed))
    gen = torch.Generator().manual_seed(seed)
    yield gen


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.failed:
        seeds = [v for k, v in item.user_properties if k == "seed"]
        if seeds:
            report.sections.append(("random seed", f"rng seed = {seeds[0]}"))
    return report


def pytest_collection_modifyitems(config, items):
    skip_cuda = pytest.mark.skip(reason="needs a CUDA GPU")
    skip_large = pytest.mark.skip(reason="large memory test; set FASTNN_TEST_LARGE=1")
    for item in items:
        if "cuda" in item.keywords and not HAS_CUDA:
            item.add_marker(skip_cuda)
        if "large" in item.keywords and os.environ.get("FASTNN_TEST_LARGE") != "1":
            item.add_marker(skip_large)
