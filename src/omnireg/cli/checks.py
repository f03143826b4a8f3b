"""Checks of the options that ``omnireg register`` and ``omnireg batch`` share, with errors naming the flag.

:func:`checked_config` runs before anything is read or computed: ``--metric``, ``--levels``,
``--iterations`` and ``--device`` are checked as flags, and a ``--config`` file's keys, preset, stage
keys and metrics are checked against the configuration's fields, so that an error names the flag or
the file and key (``--config run.yaml: stages[0]: unknown key 'metrik'``), never an internal argument.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Callable

from .common import input_path
from .errors import CliError

__all__ = ["checked_config", "config_names", "read_config_file", "read_initial_transform"]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _metrics() -> list[str]:
    from ..similarity import available_similarities

    return available_similarities()


def _check_config_file(path: Path, data: dict) -> None:
    """Keys, preset, stage keys and stage metrics of a configuration file, named by file and key."""
    from dataclasses import fields

    from ..optim import PRESETS, RegistrationConfig, StageConfig

    where = f"--config {path}"
    top = sorted({f.name for f in fields(RegistrationConfig)} | {"preset"})
    for key in data:
        if key not in top:
            raise CliError(f"{where}: unknown key {key!r}; valid: {', '.join(top)}")
    if "preset" in data and data["preset"] not in PRESETS:
        raise CliError(f"{where}: preset: expected one of {', '.join(sorted(PRESETS))}, got {data['preset']!r}")
    stages = data.get("stages", [])
    if not isinstance(stages, list) or not all(isinstance(st, dict) for st in stages):
        raise CliError(f"{where}: stages: expected a list of stages (mappings of options)")
    stage_keys = sorted(f.name for f in fields(StageConfig))
    metrics = _metrics()
    for i, st in enumerate(stages):
        for key in st:
            if key not in stage_keys:
                raise CliError(f"{where}: stages[{i}]: unknown key {key!r}; valid: {', '.join(stage_keys)}")
        if "metric" in st and str(st["metric"]).lower() not in metrics:
            raise CliError(f"{where}: stages[{i}].metric: expected one of {', '.join(metrics)}, got {st['metric']!r}")


def read_config_file(path: Path) -> dict:
    """The mapping of options in a YAML or TOML configuration file (``--config``)."""
    text = path.read_text()
    try:
        if path.suffix.lower() == ".toml":
            import tomllib

            return tomllib.loads(text)
        import yaml

        data = yaml.safe_load(text)
    except Exception as exc:  # noqa: BLE001 - parse errors of either library
        raise CliError(f"--config: cannot parse {path}: {str(exc).splitlines()[0]}") from exc
    if not isinstance(data, dict):
        raise CliError(f"--config: {path} does not hold a mapping of options")
    return data


def checked_config(args: argparse.Namespace, build: Callable[[argparse.Namespace], object]):
    """``build(args)`` (the command's configuration builder) after checking the flags and the config file.

    Raises:
        CliError: one line naming the flag, or the config file and the key.
    """
    metric = getattr(args, "metric", None)
    if metric is not None:
        from ..optim.presets import METRIC_RECIPES

        names = _metrics() + sorted(METRIC_RECIPES)
        if metric.lower() not in names:
            raise CliError(f"--metric: expected one of {', '.join(names)}, got {metric!r}")
    levels = getattr(args, "levels", None)
    if levels is not None and levels < 1:
        raise CliError(f"--levels: expected an integer >= 1, got {levels}")
    iterations = getattr(args, "iterations", None)
    if iterations is not None and iterations < 0:
        raise CliError(f"--iterations: expected an integer >= 0, got {iterations}")
    if getattr(args, "device", None) is not None:
        from ..pipeline.inputs import check_device

        try:
            check_device(args.device, "--device")
        except ValueError as exc:
            raise CliError(_first_line(exc)) from exc
    config_path = getattr(args, "config", None)
    if config_path:
        path = input_path(config_path, "--config")
        _check_config_file(path, read_config_file(path))
    try:
        return build(args)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, CliError) or not config_path:
            raise
        msg = _first_line(exc)
        raise CliError(f"--config {config_path}: {msg[len('config: '):] if msg.startswith('config: ') else msg}") from exc


def config_names(args: argparse.Namespace) -> dict[str, str]:
    """How the configuration and the device are named in messages of :func:`omnireg.pipeline.run_registration`."""
    config = f"--config {args.config}" if getattr(args, "config", None) else (
        f"--preset {args.preset}" if getattr(args, "preset", None) else "the configuration")
    return {"config": config, "device": "--device"}


def read_initial_transform(path: str):
    """The ``(D+1, D+1)`` world matrix of a linear ITK transform file given as ``--initial-transform``."""
    import numpy as np

    from ..io import read_transform_file

    p = input_path(path, "--initial-transform")
    try:
        items = read_transform_file(p)
    except (ValueError, OSError, RuntimeError) as exc:
        raise CliError(f"--initial-transform: {_first_line(exc)}") from exc
    if len(items) != 1 or items[0][0] != "linear":
        raise CliError("--initial-transform: expected one linear transform (.mat/.tfm/.txt)")
    return np.asarray(items[0][1])
