"""The RealBench report of run_realbench.py: this run's seed-selection means beside the paper's
published rows (benchmark/paper_realbench.json), as benchmark.report blocks, written as
Markdown (report/realbench_report.md) and shown as text.

The means come from benchmarks.py's per-image score rows (its <stem>_scores.json): per scene,
the completions ranked by correspondences with the references, the lowest-ranked share
dropped, the rest averaged; then the mean over scenes.
"""

from __future__ import annotations

import math
from pathlib import Path

from benchmark.report import PAPER_METRICS, PAPER_ROWS, fmt, header, render_markdown, render_text
from benchmark.suite import seed_selection
from realfill_utils import atomic_path

PAPER_SCENES = 33  # RealBench as published: 23 outpainting + 10 inpainting scenes
DROP_REPORTED = 0.75  # the paper's seed-selection row drops the lowest-ranked 75%
REPORT_FILE = "realbench_report.md"


def selection_means(rows: list[dict], metrics: list[str], drops=(0.0, DROP_REPORTED)) -> dict:
    """{(dataset, variant): {"scenes": n, "means": {drop: {metric: mean over scenes}}}} from
    benchmarks.py's per-image score rows; the lowest-ranked `drop` of each scene is dropped."""
    folders: dict[tuple, list[dict]] = {}
    for row in rows:
        folders.setdefault((row["dataset"], row["variant"], row["folder"]), []).append(row)
    out: dict = {}
    for (dataset, variant, _), images in sorted(folders.items()):
        ranked = all(r["rank"] is not None for r in images)
        order = [r["image"] for r in sorted(images, key=lambda r: (r["rank"] or 0, r["image"]))]
        group = out.setdefault(
            (dataset, variant), {"scenes": 0, "means": {d: {m: [] for m in metrics} for d in drops}}
        )
        group["scenes"] += 1
        for m in metrics:
            scores = {r["image"]: r[m] for r in images if r.get(m) is not None}
            complete = len(scores) == len(images)
            by_drop = seed_selection(scores, order, drops) if complete else {}
            for d in drops:
                usable = complete and (ranked or d == 0.0)
                group["means"][d][m].append(by_drop[d] if usable else math.nan)
    for group in out.values():
        for per_metric in group["means"].values():
            for m, values in per_metric.items():
                per_metric[m] = (
                    math.nan if any(map(math.isnan, values)) else sum(values) / len(values)
                )
    return out


def table_blocks(config: dict, scores: dict, report_file: Path, statuses: dict) -> list:
    """The paper's RealBench rows beside this run's, as benchmark.report blocks."""
    recipe = config["recipe"]
    metrics = [m for m in PAPER_METRICS if m in recipe["metrics"]]
    means = selection_means(scores["scores"], metrics)
    done = sum(r["status"] == "done" for r in statuses.values())
    realbench = [s for s in config["scenes"] if s["dataset"] == "RealBench"]
    head = ["method", "source", "scenes"] + [header(m) for m in metrics]
    rows = [
        [name, "paper (quoted)", str(PAPER_SCENES)]
        + [fmt(v, m) for v, m in zip(values, PAPER_METRICS, strict=True) if m in metrics]
        for name, values in PAPER_ROWS
    ]
    custom = []
    for (dataset, variant), group in means.items():
        label = "RealFill" if variant == "base" else "ReFill" if variant == "refill" else variant
        for drop in (0.0, DROP_REPORTED):
            title = f"seed selection drop {drop:.0%}" if drop else "all completions"
            row = [f"{label}, {title}", "this run", str(group["scenes"])]
            row += [fmt(group["means"][drop][m], m) for m in metrics]
            (rows if dataset == "RealBench" else custom).append(row)
    unavailable = {
        m: v["status"] for m, v in scores["metrics"].items() if v["status"] != "ok" and m in metrics
    }
    notes = [
        f"{done} of the run's {len(config['scenes'])} scenes are done ({len(realbench)} of them "
        f"RealBench); the paper averages all {PAPER_SCENES} RealBench scenes.",
        "Recipe: base {pretrained_model_name_or_path}; {max_train_steps} steps, batch "
        "{train_batch_size}, {resolution} px; {num_images} completions per scene, {scheduler} "
        "{num_inference_steps} steps; ranking by {matcher}.".format(**recipe),
        "Seed selection: each scene's completions ranked by correspondences with the "
        "references; the lowest-ranked share is dropped, the rest averaged.",
    ]
    notes += [f"{m}: {status}" for m, status in unavailable.items()]
    hours = sum(r["hours"] for r in statuses.values())
    notes.append(f"Recorded stage time: {hours:.2f} h. Full report: {report_file}")
    blocks = [("h", "RealBench: this run beside the paper"), ("table", head, rows)]
    if custom:
        blocks += [("h2", "Custom scenes (no paper numbers)"), ("table", head, custom)]
    return blocks + [("list", notes)]


def write(report_dir: Path, config: dict, scores: dict, report_file: Path, statuses: dict):
    """Write <report_dir>/realbench_report.md; returns its path and the text version.

    config: the run's realbench_run.json; scores: benchmarks.py's scores JSON of the finished
    scenes (written beside `report_file`); statuses: scene name -> run_realbench status row."""
    blocks = table_blocks(config, scores, report_file, statuses)
    path = report_dir / REPORT_FILE
    with atomic_path(path) as tmp:
        tmp.write_text(render_markdown(blocks))
    return path, render_text(blocks)
