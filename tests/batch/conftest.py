"""The batch command's parser (the tiny cohort of the batch tests is built by ``cohort`` in tests/conftest.py)."""

from __future__ import annotations

import argparse

import pytest


@pytest.fixture
def batch_parser() -> argparse.ArgumentParser:
    """The ``omnireg`` parser with the batch command (built here: cli/main.py does not list it yet)."""
    from omnireg.cli import batch

    parser = argparse.ArgumentParser(prog="omnireg")
    batch.add_parser(parser.add_subparsers(dest="command"))
    return parser
