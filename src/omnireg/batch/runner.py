"""Running a batch of registrations with one configuration: resumable, failure-tolerant, on Dask or in-process.

Layout of the output folder ``OUT``::

    OUT/<id>/          the outputs of :func:`~omnireg.pipeline.run_registration` (result.json last), or
    OUT/<id>/error.json  for a failed pair: {"id", "error_type", "error" (one line), "traceback", ...}
    OUT/summary.csv, OUT/summary.json   one row per pair (:mod:`omnireg.batch.summary`)

How a run proceeds:

1. Every pair's folder is inspected. A folder with a *complete* ``result.json`` (it parses, names outputs that
   exist, holds the same configuration, and no ``error.json`` lies beside it) is skipped and logged,
   unless ``force``. A folder with a result of another configuration, or with files that no batch wrote (no
   ``result.json``, no ``error.json``), stops the batch before anything runs, unless ``force``.
2. The other pairs run, each as one task. A pair is registered into a fresh folder under
   ``OUT/.omnireg-staging/`` and moved to ``OUT/<id>/`` only when every output is written, so ``OUT/<id>/``
   never holds a half-written result, and a retried pair replaces the previous ``error.json``. A pair that
   raises has its error recorded in ``OUT/<id>/error.json`` and the summary (status ``failed``); the others go
   on. A rerun retries the failed pairs. A pair whose CSV row cannot be used (a missing file: its
   :class:`~omnireg.batch.pairs.PairSpec` has a ``problem``) is not run, nothing is written for it, and its
   summary row (status ``invalid``) says why. Run one batch per output folder at a time: a new run removes the staging
   leftovers of an interrupted one.
3. Every task limits its threads: ``torch.set_num_threads(threads_per_task)`` and the ``OMP_NUM_THREADS``,
   ``MKL_NUM_THREADS``, ``OPENBLAS_NUM_THREADS`` variables (restored afterwards), so that ``workers *
   threads_per_task`` threads share the cores.
4. The summary is rewritten (atomically) as pairs finish, at most every few seconds, and at the end.

Where tasks run: ``workers=0`` runs the pairs one after the other in this process (debugging, tests). Otherwise
a ``distributed.LocalCluster`` of worker *processes* (``threads_per_worker=1``, ``max(1, cores //
threads_per_task)`` workers by default, at most one per pair) is started for the batch and closed after it;
its worker processes start with the thread variables already set. With ``scheduler`` the tasks go to an
existing Dask cluster, whose workers must see the same file system paths (the CSV's paths are made absolute).
``torch.set_num_threads`` is per process: give such a cluster's workers one thread each (``--nthreads 1``).

Reproducibility: every pair runs with the configuration's seed (the global seed), so a pair gives the same
result whichever worker runs it and whatever else runs in the batch.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import tempfile
import time
import traceback
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

from ..io import json_ready, write_json_atomic
from ..pipeline import as_config, run_registration
from .pairs import PairSpec
from .summary import PairStatus, count_statuses, row_from_error, row_from_invalid, row_from_result, write_summary

__all__ = ["BatchResult", "STAGING_DIR", "THREAD_VARIABLES", "default_workers", "load_complete_result",
           "run_batch", "run_pair", "thread_limit"]

logger = logging.getLogger(__name__)

#: Folder under ``OUT`` where pairs are written before they are moved into place.
STAGING_DIR = ".omnireg-staging"
#: Environment variables set to ``threads_per_task`` while a task runs (and for local worker processes).
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
_SUMMARY_INTERVAL_S = 5.0
_CONNECT_TIMEOUT_S = 20


@dataclass
class BatchResult:
    """What :func:`run_batch` returns.

    Attributes:
        rows: one summary row per pair, in the order of the pairs (see :mod:`omnireg.batch.summary`).
        out_dir: the output folder.
        summary_csv, summary_json: the summary files written.
    """

    rows: list[dict]
    out_dir: Path
    summary_csv: Path
    summary_json: Path

    @property
    def counts(self) -> dict[str, int]:
        """Number of pairs per status (``done``, ``skipped``, ``failed``, ``invalid``, ``pending``)."""
        return count_statuses(self.rows)

    @property
    def failed(self) -> list[str]:
        """Ids of the failed pairs (the registration raised)."""
        return [r["id"] for r in self.rows if r["status"] == PairStatus.FAILED.value]

    @property
    def invalid(self) -> list[str]:
        """Ids of the pairs whose CSV row could not be used (not run; the row's ``error`` says why)."""
        return [r["id"] for r in self.rows if r["status"] == PairStatus.INVALID.value]


def default_workers(threads_per_task: int) -> int:
    """``max(1, cores // threads_per_task)``, cores being the CPUs this process may use."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    return max(1, cores // int(threads_per_task))


@contextmanager
def thread_limit(threads: int) -> Iterator[None]:
    """Within the block, torch uses ``threads`` threads and :data:`THREAD_VARIABLES` say so; restored after."""
    import torch

    old_env = {k: os.environ.get(k) for k in THREAD_VARIABLES}
    old_threads = torch.get_num_threads()
    os.environ.update({k: str(threads) for k in THREAD_VARIABLES})
    torch.set_num_threads(int(threads))
    try:
        yield
    finally:
        torch.set_num_threads(old_threads)
        for k, v in old_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _same_config(stored: Any, config: Mapping) -> bool:
    return json_ready(stored) == json_ready(config)


def load_complete_result(pair_dir: str | os.PathLike) -> dict | None:
    """The ``result.json`` content of a finished pair folder, or ``None`` if the folder holds no complete result.

    Complete: ``result.json`` parses, has ``metric_after`` and ``outputs``, every output it names exists, and
    no ``error.json`` lies beside it (a later attempt failed).
    """
    d = Path(pair_dir)
    path = d / "result.json"
    if not path.is_file() or (d / "error.json").exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    outputs = data.get("outputs") if isinstance(data, dict) else None
    if not isinstance(outputs, dict) or "metric_after" not in data:
        return None
    names = [outputs.get("warped"), outputs.get("transform"), outputs.get("warped_labels"), *(outputs.get("ants_order") or [])]
    if any(n and not (d / str(n)).is_file() for n in names):
        return None
    return data


def _registration_kwargs(spec: PairSpec) -> dict[str, Any]:
    return {k: v for k, v in spec.inputs().items() if k not in ("fixed", "moving")}


def _install(stage: Path, final: Path, staging_root: Path) -> None:
    """Move a finished staging folder to ``final``, replacing what was there."""
    if final.exists():
        old = staging_root / f"{final.name}-old-{uuid.uuid4().hex[:8]}"
        os.rename(final, old)
        os.rename(stage, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(stage, final)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _record_failure(spec: PairSpec, out_dir: Path, error_type: str, message: str, tb: str, runtime_s: float) -> dict:
    final = out_dir / spec.id
    logger.debug("pair %s failed: %s: %s", spec.id, error_type, message)
    try:
        final.mkdir(parents=True, exist_ok=True)
        write_json_atomic(final / "error.json", {
            "id": spec.id, "error_type": error_type, "error": message, "runtime_s": runtime_s,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "inputs": spec.inputs(), "traceback": tb,
        }, force=True)
    except OSError as exc:  # the failure stays in the summary even when its folder cannot be written
        logger.error("pair %s: cannot write %s: %s", spec.id, final / "error.json", exc)
    return row_from_error(spec.id, error_type, message, runtime_s, fixed=spec.fixed, moving=spec.moving, output=final)


def run_pair(spec: PairSpec, out_dir: str | os.PathLike, config: Mapping, *, threads_per_task: int = 1,
             metadata: Mapping[str, Any] | None = None) -> dict:
    """Register one pair into ``out_dir/<id>/`` (through a staging folder) and return its summary row.

    This is the task a batch runs, on a Dask worker or in-process. It never raises for a failing pair:
    the error is written to ``out_dir/<id>/error.json`` and returned as a ``failed`` row.

    Args:
        spec: the pair.
        out_dir: the batch's output folder (must exist).
        config: the registration configuration as a dict (:meth:`RegistrationConfig.to_dict`).
        threads_per_task: threads torch and the OpenMP/MKL/OpenBLAS libraries may use.
        metadata: extra items for ``result.json`` (under ``"metadata"``); the pair id is added.

    Returns:
        A summary row with status ``done`` or ``failed`` (``invalid``, without running, for a spec with a
        ``problem``).
    """
    out = Path(out_dir)
    final = out / spec.id
    if spec.problem is not None:
        return row_from_invalid(spec.id, spec.problem, fixed=spec.fixed, moving=spec.moving, output=final)
    staging_root = out / STAGING_DIR
    t0 = time.perf_counter()
    stage = None
    try:
        with thread_limit(threads_per_task):
            staging_root.mkdir(exist_ok=True)
            stage = Path(tempfile.mkdtemp(dir=staging_root, prefix=f"{spec.id}-"))
            meta = {**dict(metadata or {}), "id": spec.id, "row": spec.row, "threads_per_task": threads_per_task,
                    "host": socket.gethostname(), "worker_pid": os.getpid()}
            result = run_registration(spec.fixed, spec.moving, stage, dict(config), metadata=meta,
                                      **_registration_kwargs(spec))
            _install(stage, final, staging_root)
            stage = None
    except Exception as exc:  # noqa: BLE001 - a failing pair is recorded, never fatal to the batch
        return _record_failure(spec, out, type(exc).__name__, _first_line(exc), traceback.format_exc(),
                               time.perf_counter() - t0)
    finally:
        if stage is not None:
            shutil.rmtree(stage, ignore_errors=True)
    logger.info("pair %s done in %.1f s", spec.id, time.perf_counter() - t0)
    return row_from_result(spec.id, PairStatus.DONE, result, final)


def _first_difference(a: Any, b: Any, path: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if a.get(k) != b.get(k):
                return _first_difference(a.get(k), b.get(k), f"{path}.{k}" if path else str(k))
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            if x != y:
                return _first_difference(x, y, f"{path}[{i}]")
    return path or "the configuration"


def _plan(pairs: Sequence[PairSpec], out: Path, config: Mapping, force: bool) -> tuple[dict[str, dict], list[PairSpec]]:
    """Rows of the pairs to skip and the pairs to run; raises before anything runs on conflicts."""
    skipped: dict[str, dict] = {}
    todo: list[PairSpec] = []
    for spec in pairs:
        d = out / spec.id
        if d.exists() and not d.is_dir():
            raise ValueError(f"--out: {d} (the folder of pair {spec.id!r}) exists and is not a folder")
        if not d.is_dir():
            todo.append(spec)
            continue
        result = load_complete_result(d)
        if result is not None and not force:
            if not _same_config(result.get("config"), config):
                where = _first_difference(json_ready(result.get("config")), json_ready(config))
                raise ValueError(f"--out: {d} holds a result computed with another configuration ({where} differs); "
                                 "use --force to recompute it, or choose another --out")
            logger.info("pair %s: complete result in %s; skipped", spec.id, d)
            skipped[spec.id] = row_from_result(spec.id, PairStatus.SKIPPED, result, d)
            continue
        ours = (d / "result.json").exists() or (d / "error.json").exists() or not any(d.iterdir())
        if not ours and not force:
            names = ", ".join(sorted(p.name for p in d.iterdir())[:3])
            raise ValueError(f"--out: {d} (the folder of pair {spec.id!r}) holds files no batch wrote ({names}); "
                             "use --force to replace them, or choose another --out")
        if (d / "error.json").exists():
            logger.info("pair %s: retrying the failed pair", spec.id)
        todo.append(spec)
    return skipped, todo


def _dask_rows(todo: Sequence[PairSpec], out: Path, config: dict, *, scheduler: str | None, workers: int,
               threads_per_task: int, metadata: Mapping) -> Iterator[dict]:
    """Run the pairs as Dask tasks and yield their rows as they finish."""
    try:
        from distributed import Client, LocalCluster, as_completed
    except ImportError as exc:
        raise ValueError("--workers: running on Dask needs the 'distributed' package (pip install \"dask[distributed]\"); "
                         "use --no-dask to run the pairs in this process") from exc

    cluster = None
    if scheduler:
        try:
            client = Client(scheduler, timeout=_CONNECT_TIMEOUT_S)
        except (OSError, TimeoutError, ValueError) as exc:
            raise ValueError(f"--scheduler: cannot connect to {scheduler}: {_first_line(exc)}") from exc
        logger.info("running %d pair(s) on the Dask cluster at %s", len(todo), scheduler)
    else:
        env = {k: str(threads_per_task) for k in THREAD_VARIABLES}
        cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None, env=env)
        client = Client(cluster)
        logger.info("running %d pair(s) on a local Dask cluster of %d worker process(es), %d thread(s) per task",
                    len(todo), workers, threads_per_task)
    try:
        futures = {}
        for spec in todo:
            fut = client.submit(run_pair, spec, str(out), config, threads_per_task=threads_per_task,
                                metadata=metadata, pure=False, key=f"omnireg-pair-{spec.id}-{uuid.uuid4().hex[:8]}")
            futures[fut] = spec
        for fut in as_completed(list(futures)):
            spec = futures[fut]
            try:
                row = fut.result()
            except Exception as exc:  # noqa: BLE001 - the worker died or the task could not run
                row = _record_failure(spec, out, type(exc).__name__, _first_line(exc), traceback.format_exc(), None)
            yield row
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def run_batch(
    pairs: Sequence[PairSpec],
    out_dir: str | os.PathLike,
    config,
    *,
    scheduler: str | None = None,
    workers: int | None = None,
    threads_per_task: int = 1,
    force: bool = False,
    on_pair_done: Callable[[dict], None] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> BatchResult:
    """Register every pair with one configuration into ``out_dir`` (module docstring: layout, resuming, Dask).

    Args:
        pairs: the pairs (e.g. from :func:`~omnireg.batch.pairs.read_pairs`); ids must be unique.
        out_dir: output folder, created if missing; an earlier batch's folder is resumed.
        config: a :class:`~omnireg.optim.RegistrationConfig`, a dict of one or a preset name; its seed is
            every pair's seed.
        scheduler: address of an existing Dask scheduler (``tcp://host:8786``); ``None`` for a local cluster.
        workers: local worker processes; ``None`` for ``max(1, cores // threads_per_task)``; ``0`` runs the
            pairs one after the other in this process. Not used with ``scheduler``.
        threads_per_task: threads one registration may use (torch and the numerical libraries).
        force: recompute pairs with complete results, and replace folders with other files.
        on_pair_done: called with each pair's summary row as it is skipped, done or failed (progress).
        metadata: extra items for ``summary.json`` and each ``result.json`` (e.g. the pairs file).

    Returns:
        A :class:`BatchResult` (rows in the order of ``pairs``).

    Raises:
        ValueError: on invalid arguments, repeated ids, or (without ``force``) pair folders holding a result
            of another configuration or files that no batch wrote; nothing has run then.
        TypeError: if an argument has the wrong type.
    """
    cfg = as_config(config).validate().to_dict()
    if isinstance(threads_per_task, bool) or not isinstance(threads_per_task, int) or threads_per_task < 1:
        raise ValueError(f"--threads-per-task: expected an integer >= 1, got {threads_per_task!r}")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 0):
        raise ValueError(f"--workers: expected an integer >= 0, got {workers!r}")
    if scheduler is not None and (not isinstance(scheduler, str) or not scheduler.strip()):
        raise ValueError(f"--scheduler: expected an address such as tcp://host:8786, got {scheduler!r}")
    if scheduler is not None and workers is not None:
        raise ValueError("--workers: not used with --scheduler (the cluster has its own workers); give one of them")
    pairs = list(pairs)
    if not pairs:
        raise ValueError("pairs: expected at least one pair, got none")
    for spec in pairs:
        if not isinstance(spec, PairSpec):
            raise TypeError(f"pairs: expected PairSpec items, got {type(spec).__name__}")
    ids = [p.id for p in pairs]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise ValueError(f"pairs: the id {dup!r} repeats; every pair needs its own output folder")
    out = Path(out_dir).expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out: {out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    staging = out / STAGING_DIR
    if staging.is_dir():  # left by an interrupted run (one batch per folder at a time)
        logger.info("removing the leftovers of an interrupted run in %s", staging)
        shutil.rmtree(staging, ignore_errors=True)

    invalid = {s.id: row_from_invalid(s.id, s.problem, fixed=s.fixed, moving=s.moving, output=out / s.id)
               for s in pairs if s.problem is not None}
    skipped, todo = _plan([s for s in pairs if s.problem is None], out, cfg, force)
    rows: dict[str, dict] = {**invalid, **skipped}
    header = {
        **dict(metadata or {}),
        "out": str(out),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "seed": cfg["seed"],
        "threads_per_task": threads_per_task,
        "config": cfg,
    }

    def ordered() -> list[dict]:
        pending = []
        for spec in pairs:
            r = rows.get(spec.id)
            if r is None:
                r = {"id": spec.id, "status": PairStatus.PENDING.value, "fixed": str(spec.fixed),
                     "moving": str(spec.moving), "output": str(out / spec.id)}
            pending.append(r)
        return pending

    for r in [*invalid.values(), *skipped.values()]:
        if on_pair_done is not None:
            on_pair_done(r)
    if invalid:
        logger.warning("%d of %d pairs are invalid and do not run (see the summary)", len(invalid), len(pairs))
    if skipped:
        logger.info("%d of %d pairs already complete; skipped", len(skipped), len(pairs))
    summary_csv, summary_json = write_summary(out, ordered(), header=header)
    last = time.monotonic()
    task_meta = {k: v for k, v in dict(metadata or {}).items()}
    try:
        if todo:
            if scheduler is None and workers == 0:
                logger.info("running %d pair(s) in this process, %d thread(s) each", len(todo), threads_per_task)
                produced = (run_pair(s, out, cfg, threads_per_task=threads_per_task, metadata=task_meta) for s in todo)
            else:
                n = min(workers or default_workers(threads_per_task), len(todo))
                produced = _dask_rows(todo, out, cfg, scheduler=scheduler, workers=n, threads_per_task=threads_per_task,
                                      metadata=task_meta)
            for row in produced:
                rows[row["id"]] = row
                if row["status"] == PairStatus.FAILED.value:
                    logger.warning("pair %s failed: %s: %s", row["id"], row["error_type"], row["error"])
                if on_pair_done is not None:
                    on_pair_done(row)
                if time.monotonic() - last > _SUMMARY_INTERVAL_S:
                    write_summary(out, ordered(), header=header)
                    last = time.monotonic()
    finally:
        header["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        summary_csv, summary_json = write_summary(out, ordered(), header=header)
        if staging.is_dir() and not any(staging.iterdir()):
            staging.rmdir()
    result = BatchResult(rows=ordered(), out_dir=out, summary_csv=summary_csv, summary_json=summary_json)
    logger.info("batch finished: %s", ", ".join(f"{v} {k}" for k, v in result.counts.items() if v))
    return result

