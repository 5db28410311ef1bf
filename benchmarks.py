"""Evaluate RealFill results with the paper's six metrics, cached, and write the reports.

Finds RealBench-<name>-results[-variant] and Custom-<name>-results[-variant] folders (a scene
name is letters, digits and underscores, e.g. 23 or flowerwoman), scores every completion
against its scene's target/gt.png inside target/mask.png (PSNR, SSIM, LPIPS) or on the full
image (DreamSim, DINO, CLIP), ranks completions by correspondences for the
seed-selection analysis, and writes a text + Markdown report, per-image CSV/JSON, plots and
contact sheets. A scene without target/gt.png can only be ranked (--metrics loftr). Examples:

    python benchmarks.py --results_base_dir ./realfill_results \\
        --realbench_dataset_dir ./realfill_data_release_full --output_file ./benchmark_report.txt
    python benchmarks.py --results_base_dir ./realfill_results \\
        --realbench_dataset_dir ./realfill_data_release_full --metrics PSNR SSIM --force_recalc SSIM

Learned metrics take local weights from REALFILL_LPIPS_WEIGHTS, REALFILL_DREAMSIM_WEIGHTS,
REALFILL_DINO_WEIGHTS and REALFILL_CLIP_WEIGHTS (see docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import realfill_utils as ru
from benchmark.common import METRICS
from benchmark.report import Summary, foreign_report_files, write_reports
from benchmark.suite import NO_GT, RANKING_FILE, discover, evaluate, rank
from loftr_ranking import MATCHERS
from realfill_utils import NUM_IMAGES, SceneError


class NothingScored(RuntimeError):
    """Every requested metric ran, and none scored a single image."""


class ScoresMissing(RuntimeError):
    """The report is written, but some images could not be scored (exit 1, not 0)."""


def metric_name(text: str) -> str:
    """Accept metric names in any case (psnr, PSNR, dreamsim)."""
    names = {m.lower(): m for m in [*METRICS, "all", "loftr"]}
    if text.lower() not in names:
        raise argparse.ArgumentTypeError(
            f"unknown metric '{text}': choose from {', '.join(METRICS)} (or all, loftr)"
        )
    return names[text.lower()]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=ru.HelpFormatter)
    parser.add_argument(
        "--results_base_dir",
        type=Path,
        required=True,
        help="folder holding the RealBench-<name>-results[-variant] folders",
    )
    parser.add_argument(
        "--realbench_dataset_dir",
        type=Path,
        help="RealBench data: <dir>/RealBench/<N>/target/{gt,mask}.png (or <dir>/<N>/...)",
    )
    parser.add_argument(
        "--custom_dataset_dir",
        type=Path,
        help="custom data: <dir>/Custom/<N>/target/{gt,mask}.png (or <dir>/<N>/...)",
    )
    parser.add_argument(
        "--cache_dir",
        type=Path,
        default=Path("benchmark_cache"),
        help="score cache, shared safely between runs",
    )
    parser.add_argument(
        "--output_file",
        type=Path,
        default=Path("benchmark_report.txt"),
        help="text report; the other report files are written next to it",
    )
    parser.add_argument(
        "--metrics",
        nargs="+",
        type=metric_name,
        default=list(METRICS),
        help=f"metrics to compute: {' '.join(METRICS)}; loftr also ranks the completions of "
        "scenes without gt.png",
    )
    parser.add_argument(
        "--force_recalc",
        nargs="+",
        type=metric_name,
        default=[],
        help="recompute these metrics (METRIC ...), every metric (all), or the "
        "correspondence ranking (loftr), ignoring the caches",
    )
    parser.add_argument(
        "--num_images",
        type=ru.positive_int,
        default=NUM_IMAGES,
        help="completions per results folder; folders with fewer are skipped",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=min(4, os.cpu_count() or 1),
        help="metric and ranking processes run at once",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=3600.0,
        help="seconds one metric process (or one ranking) may run",
    )
    parser.add_argument(
        "--ranking_matcher",
        default="loftr",
        choices=MATCHERS,
        help="--matcher passed to loftr_ranking.py",
    )
    args = parser.parse_args(argv)
    args.rank_gt_free = "loftr" in args.metrics  # the ranking needs no ground truth
    args.metrics = [m for m in dict.fromkeys(args.metrics) if m in METRICS]
    # The metric processes run from the repository root: relative paths must not reach them.
    for name in ("results_base_dir", "realbench_dataset_dir", "custom_dataset_dir", "cache_dir"):
        if getattr(args, name) is not None:
            setattr(args, name, getattr(args, name).resolve())
    args.output_file = args.output_file.resolve()
    return args


def check_outputs(args: argparse.Namespace, datasets: dict[str, Path]) -> None:
    """SceneError unless the report and the cache stay out of the datasets and the report
    overwrites only files an earlier report wrote."""
    for flag, path in (("--output_file", args.output_file), ("--cache_dir", args.cache_dir)):
        for what, folder in datasets.items():
            if path == folder or folder in path.parents:
                raise SceneError(f"{flag} {path} lies inside {what} {folder}: datasets are only "
                                 f"read, so pass an {flag} outside it")  # fmt: skip
    if args.output_file.is_dir():
        raise SceneError(f"--output_file {args.output_file} is a folder: pass a file name")
    foreign = foreign_report_files(args.output_file)
    if foreign:
        raise SceneError(
            f"--output_file {args.output_file}: {', '.join(str(p) for p in foreign)} exist and "
            "were not written by a report (no report scores JSON beside them); a report "
            "overwrites only its own files: choose another --output_file or move those away"
        )


def run(args: argparse.Namespace, progress: bool = True) -> dict:
    """Discover, score, rank and report; returns the written files."""
    if not args.results_base_dir.is_dir():
        raise SceneError(f"{args.results_base_dir}: results folder not found (--results_base_dir)")
    dataset_dirs = {"RealBench": args.realbench_dataset_dir, "Custom": args.custom_dataset_dir}
    check_outputs(args, {f"the {k} dataset": v for k, v in dataset_dirs.items() if v is not None})
    gt_free = []
    folders, skipped = discover(args.results_base_dir, dataset_dirs, args.num_images, gt_free)
    for name, reason in skipped:
        if not (args.rank_gt_free and NO_GT in reason):  # those are ranked below, as asked
            print(f"skipping {name}: {reason}", file=sys.stderr)
    force = set(args.force_recalc)
    unranked = []  # (folder, why) where a ranking was asked for and failed
    if gt_free and args.rank_gt_free:
        unranked += rank_gt_free(gt_free, args, "loftr" in force)
    if not folders:
        if gt_free and args.rank_gt_free:
            if unranked:
                raise (NothingScored if len(unranked) == len(gt_free) else ScoresMissing)(
                    f"{len(unranked)} of {len(gt_free)} folders could not be ranked (first: "
                    f"{unranked[0][0]}: {unranked[0][1]})"
                )
            return {}
        found = "no results folder" if not skipped else f"none of the {len(skipped)} folders"
        raise SceneError(
            f"nothing to evaluate: {found} in {args.results_base_dir} has all "
            f"{args.num_images} images and a scene with target/gt.png"
            + (" (the reasons are above)" if skipped else "")
            + "; pass the dataset folders (--realbench_dataset_dir, --custom_dataset_dir) and "
            "name the folders RealBench-<name>-results or Custom-<name>-results"
        )
    start = time.perf_counter()
    # Rankings and metrics share one pool of `--jobs` process slots and run side by side.
    slots = threading.Semaphore(max(1, args.jobs))
    with ThreadPoolExecutor(max_workers=1) as background:
        rankings = background.submit(
            rank, folders, args.ranking_matcher, "loftr" in force, args.jobs, args.timeout, slots
        )
        ev = evaluate(
            folders,
            args.metrics,
            args.cache_dir,
            force,
            args.jobs,
            args.timeout,
            progress=progress,
            slots=slots,
        )
        rankings = rankings.result()
    scored_s = time.perf_counter() - start
    settings = vars(args) | {"seconds": round(scored_s, 2)}
    outputs = write_reports(
        Summary(folders, args.metrics, ev, rankings), args.output_file, settings, skipped
    )
    report_s = time.perf_counter() - start - scored_s
    for metric, r in ev.runs.items():
        print(
            f"{metric}: {r.status} ({r.computed} computed, {r.cached} cached, "
            f"{len(r.errors)} errors, {r.seconds:.2f} s)",
            file=sys.stderr,
        )
    print(
        f"{len(folders)} folders evaluated (scores {scored_s:.2f} s, report files "
        f"{report_s:.2f} s); report: {args.output_file}",
        file=sys.stderr,
    )
    if args.metrics and not any(r.computed + r.cached for r in ev.runs.values()):
        raise NothingScored(
            f"no metric scored a single image of the {len(folders)} folders: see the "
            f"statuses above and the report {args.output_file}"
        )
    if args.rank_gt_free:  # the ranking was asked for by name (--metrics loftr)
        unranked += [(n, why) for n, why in rankings.items() if isinstance(why, str)]
    if unranked:
        raise ScoresMissing(
            f"{len(unranked)} folder(s) could not be ranked (first: {unranked[0][0]}: "
            f"{unranked[0][1]}); the report {args.output_file} has the rest"
        )
    errors = [e for r in ev.runs.values() for e in r.errors]
    if errors:  # the report is there, but it is not the whole answer
        raise ScoresMissing(
            f"{len(errors)} image score(s) failed (first: {errors[0][:300]}); the report "
            f"{args.output_file} lists them and scores the rest"
        )
    return outputs


def rank_gt_free(folders, args: argparse.Namespace, force: bool) -> list[tuple[str, str]]:
    """Rank the completions of scenes without gt.png, the one analysis that needs none;
    returns (folder, why) for those that could not be ranked."""
    rankings = rank(folders, args.ranking_matcher, force, args.jobs, args.timeout)
    failed = []
    for rf in folders:
        order = rankings[rf.name]
        if isinstance(order, str):
            print(f"{rf.name}: {order}", file=sys.stderr)
            failed.append((rf.name, order))
        else:
            print(
                f"{rf.name}: ranked, best first {', '.join(order[:3])} ...; scores in "
                f"{rf.folder / RANKING_FILE}",
                file=sys.stderr,
            )
    return failed


def main(argv=None) -> int:
    args = parse_args(argv)
    return ru.run_main(
        lambda: run(args),
        interrupted="interrupted; the cache keeps every score finished so far",
        failed={NothingScored: "error: {err}", ScoresMissing: "error: {err}"},
    )


if __name__ == "__main__":
    sys.exit(main())
