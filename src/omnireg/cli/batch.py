"""``omnireg batch PAIRS.csv --out DIR``: many registrations with one configuration, resumable, on Dask."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from .common import preset_choices
from .errors import EXIT_FAILED, EXIT_OK, CliError

__all__ = ["add_parser", "run"]

log = logging.getLogger(__name__)

_MAX_TABLE_ROWS = 50


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "batch",
        help="register many pairs listed in a CSV with one configuration (resumable; local or remote Dask cluster)",
        description=(
            "Register every pair of PAIRS.csv with one configuration. Columns: fixed, moving (required); id, "
            "fixed_labels, moving_labels, fixed_landmarks, moving_landmarks, fixed_mask, moving_mask (optional; "
            "relative paths are relative to the CSV's folder). Each pair writes into DIR/<id>/ the outputs of "
            "'omnireg register' (warped.nii.gz, transform.h5, linear.mat, [deformation.nii.gz], "
            "[warped_labels.nii.gz], result.json) plus Dice per label (both label maps given) and landmark TRE "
            "(both landmark files given) in result.json. The id comes from the id column, else from the file names. "
            "A pair with a complete DIR/<id>/result.json is skipped, so rerunning resumes a batch and retries the "
            "failed pairs; a failed pair's error is kept in DIR/<id>/error.json and does not stop the others. "
            "DIR/summary.csv and DIR/summary.json list every pair (status, metric before/after, Dice, TRE, runtime)."
        ),
        epilog=(
            "A row that cannot be used (a missing file, an empty cell) is reported as 'invalid' and not run; a pair "
            "whose registration fails (a corrupt image) is reported as 'failed'; the other pairs run either way. "
            "Exit status, at the end: 0 when every pair is done or skipped, 1 when some failed or were invalid (see "
            "DIR/summary.csv), 2 on errors found before anything ran (the structure of PAIRS.csv, options), 130 on "
            "Ctrl-C. Every pair uses the same seed (--seed), so results do not depend on the worker or on the other "
            "pairs."
        ),
    )
    p.add_argument("pairs", metavar="PAIRS.csv", help="table of the pairs (see above)")
    p.add_argument("--out", "-o", required=True, help="output folder (created if missing; an earlier batch's is resumed)")
    cfg = p.add_mutually_exclusive_group()
    cfg.add_argument("--preset", choices=preset_choices(), metavar="NAME", default=None,
                     help="ready configuration: %(choices)s (default: affine)")
    cfg.add_argument("--config", default=None, help="YAML or TOML configuration file (may name a preset)")
    p.add_argument("--seed", type=int, default=None, help="random seed of every pair (default 0)")
    run_on = p.add_argument_group("where the pairs run")
    run_on.add_argument("--scheduler", default=None, metavar="ADDRESS",
                        help="address of an existing Dask scheduler (e.g. tcp://host:8786); its workers must see the "
                             "same paths. Default: a local cluster of worker processes")
    run_on.add_argument("--workers", type=int, default=None, metavar="N",
                        help="local worker processes (default: max(1, cores // threads-per-task)); 0 runs the pairs "
                             "one after the other in this process")
    run_on.add_argument("--no-dask", action="store_true", help="run the pairs one after the other in this process "
                                                               "(as --workers 0)")
    run_on.add_argument("--threads-per-task", type=int, default=1, metavar="T",
                        help="threads one registration may use (torch, OpenMP, MKL); default 1")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--force", action="store_true",
                   help="recompute pairs that already have a complete result, and replace other files in their folders")
    # options of 'omnireg register' that build_config reads; the batch takes its configuration from --preset/--config
    p.set_defaults(func=run, transform=None, metric=None, levels=None, iterations=None, init=None, device=None)


def _quiet_dask(verbose: int) -> None:
    """Dask's loggers (scheduler, nanny, worker) at errors only, warnings with -v; their own levels with -vv.

    ``distributed`` sets explicit levels on its child loggers when imported, so they are set here, after the
    import, rather than through the parent logger.
    """
    if verbose >= 2:
        return
    try:
        import distributed  # noqa: F401 - configures its loggers on import
    except ImportError:
        return
    level = logging.ERROR if verbose == 0 else logging.WARNING
    for name in list(logging.root.manager.loggerDict):
        if name == "distributed" or name.startswith("distributed."):
            logging.getLogger(name).setLevel(level)


class _PairProgress:
    """A progress bar over pairs (tqdm), fed with summary rows."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.bar = None
        self.counts = {"done": 0, "skipped": 0, "failed": 0, "invalid": 0}
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc="pairs", unit="pair", dynamic_ncols=True)

    def __call__(self, row: dict) -> None:
        status = str(row.get("status"))
        self.counts[status] = self.counts.get(status, 0) + 1
        if self.bar is not None:
            self.bar.set_postfix({k: v for k, v in self.counts.items() if v}, refresh=False)
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run(args: argparse.Namespace) -> int:
    from contextlib import nullcontext

    from ..batch import format_summary, read_pairs, run_batch
    from .checks import checked_config
    from .register import build_config

    if args.threads_per_task < 1:
        raise CliError(f"--threads-per-task: expected an integer >= 1, got {args.threads_per_task}")
    if args.workers is not None and args.workers < 0:
        raise CliError(f"--workers: expected an integer >= 0, got {args.workers}")
    if args.scheduler and (args.no_dask or args.workers is not None):
        raise CliError(f"--scheduler: runs the pairs on that cluster; leave out {'--no-dask' if args.no_dask else '--workers'}")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CliError(f"--out: {out} exists and is not a folder")
    pairs = read_pairs(args.pairs)
    config = checked_config(args, build_config)
    workers = 0 if args.no_dask else args.workers
    quiet = bool(getattr(args, "quiet", False))
    if workers != 0:
        _quiet_dask(int(getattr(args, "verbose", 0) or 0))
    progress = _PairProgress(len(pairs), enabled=not args.no_progress and not quiet)
    redirect = nullcontext()
    if progress.bar is not None:
        from tqdm.contrib.logging import logging_redirect_tqdm

        redirect = logging_redirect_tqdm()
    try:
        with redirect:
            result = run_batch(
                pairs, out, config, scheduler=args.scheduler, workers=workers, threads_per_task=args.threads_per_task,
                force=args.force, on_pair_done=progress,
                metadata={"pairs_file": str(Path(args.pairs).resolve())},
            )
    finally:
        progress.close()
    rows = result.rows
    if len(rows) > _MAX_TABLE_ROWS:
        failed = [r for r in rows if r["status"] in ("failed", "invalid")]
        print(format_summary(failed[:_MAX_TABLE_ROWS]).rsplit("\n", 1)[0] if failed else "no failed or invalid pairs")
        counts = result.counts
        print(f"{counts['done']} done, {counts['skipped']} skipped, {counts['failed']} failed, {counts['invalid']} "
              f"invalid (every pair in {result.summary_csv})")
    else:
        print(format_summary(rows))
    print(f"summary: {result.summary_csv}")
    return EXIT_FAILED if result.failed or result.invalid else EXIT_OK
