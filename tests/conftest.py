"""Shared fixtures: run the CLI in-process and capture its output."""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest

os.environ.setdefault("DSRECON_NO_PROGRESS", "1")
if os.environ.get("PYTEST_XDIST_WORKER"):  # `make test` runs two workers: one thread each, or they slow each other
    os.environ.setdefault("DSRECON_TEST_THREADS", "1")
    os.environ.setdefault("NUMBA_NUM_THREADS", "1")
    os.environ.setdefault("OMP_NUM_THREADS", "1")


@dataclass
class CliResult:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(capsys):
    """cli("simulate", "list") → CliResult(code, stdout, stderr)."""
    from dsrecon.cli.main import main

    def run(*args: str) -> CliResult:
        capsys.readouterr()
        code = main([str(a) for a in args])
        cap = capsys.readouterr()
        return CliResult(code, cap.out, cap.err)

    return run


@pytest.fixture(autouse=True, scope="session")
def _torch_threads():
    try:
        import torch

        torch.set_num_threads(int(os.environ.get("DSRECON_TEST_THREADS", "2")))
    except ImportError:  # pragma: no cover
        pass


def pytest_collection_modifyitems(config, items):  # noqa: ARG001
    """Tests pinned to one xdist worker (`xdist_group`, e.g. the Ray cluster tests, about 100 s in
    one unit) are collected first, so that `make test`'s workers start them at once and share the
    rest, instead of one worker running them alone at the end. Order is otherwise unchanged."""
    items.sort(key=lambda item: 0 if item.get_closest_marker("xdist_group") else 1)
