"""The docstring examples of the transform modules run and hold."""

from __future__ import annotations

import doctest
import importlib

import pytest


@pytest.mark.parametrize("module", ["linear", "compose", "warp"])
def test_docstring_examples(module):
    mod = importlib.import_module(f"omnireg.transforms.{module}")
    result = doctest.testmod(mod, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
