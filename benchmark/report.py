"""Reports of a benchmark run: text and Markdown reports, per-image CSV/JSON, bar plots,
drop-rate curves and a contact sheet per results folder.

Files, for --output_file <dir>/<stem>.txt:
    <stem>.txt, <stem>.md            the report (same content, plain text and Markdown)
    <stem>_scores.csv, .json         every per-image score
    <stem>_plots/metrics.png         bar plot per metric, one bar per dataset and variant
    <stem>_plots/seed_selection.png  every metric against the drop rate, one line per variant
    <stem>_contact_sheets/<folder>.jpg  target (mask outlined), ground truth, completions in
                                     rank order with their scores
Plots and contact sheets are redrawn only when what they show has changed.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import statistics
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from benchmark.common import EMBED_SIZE, METRICS
from benchmark.suite import DROP_RATES, Evaluation, ResultFolder, ranking_scores, seed_selection
from realfill_utils import atomic_path, atomic_write_json, load_image, load_mask

PAPER_FILE = Path(__file__).with_name("paper_realbench.json")  # published RealBench figures


def load_paper_table(path: Path = PAPER_FILE) -> tuple[tuple[str, ...], list]:
    """(metric names, [(method, (value per metric)), ...]) from the published-figures file."""
    table = json.loads(path.read_text())
    metrics = tuple(table["metrics"])
    rows = [(row["method"], tuple(row["values"])) for row in table["rows"]]
    for method, values in rows:
        assert len(values) == len(metrics), f"{path}: {method} has {len(values)} values"
    return metrics, rows


# Quoted, not measured: each row's source (paper and table) is in the file.
PAPER_METRICS, PAPER_ROWS = load_paper_table()
THUMB = 160  # contact-sheet thumbnail height, px
PICTURES_VERSION = 2  # bump when plots or contact sheets change look: redraws them all


def variant_label(variant: str) -> str:
    return variant or "base"


def mean(values) -> float:
    values = list(values)
    return statistics.fmean(values) if values else math.nan


def fmt(value: float, metric: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if math.isinf(value):
        return "inf"
    return f"{value:.2f}" if metric == "PSNR" else f"{value:.3f}"


def resized_note(resized: set) -> str:
    if not resized:
        return "none was."
    folders = sorted({folder for folder, _ in resized})
    listed = ", ".join(folders[:10]) + (", ..." if len(folders) > 10 else "")
    return f"{len(resized)} image{'s were' if len(resized) > 1 else ' was'} resized ({listed})."


def header(metric: str) -> str:
    return f"{metric} {METRICS[metric].arrow}"


# ---------------------------------------------------------------------------------------------
# Numbers
# ---------------------------------------------------------------------------------------------
@dataclass
class Summary:
    folders: list[ResultFolder]
    metrics: list[str]
    ev: Evaluation
    rankings: dict

    def folder_mean(self, rf: ResultFolder, metric: str) -> float:
        """Mean over the folder's images; n/a unless every image has a score."""
        scores = self.ev.scores.get((rf.name, metric), {})
        if len(scores) < len(rf.images):
            return math.nan
        return mean(scores.values())

    def groups(self) -> dict[tuple[str, str], list[ResultFolder]]:
        out: dict = {}
        for rf in self.folders:
            out.setdefault((rf.dataset, rf.variant), []).append(rf)
        return dict(sorted(out.items()))

    def group_mean(self, folders: list[ResultFolder], metric: str) -> float:
        """Mean over scenes of the per-scene means (all scenes have the same image count)."""
        values = [self.folder_mean(rf, metric) for rf in folders]
        return math.nan if any(math.isnan(v) for v in values) else mean(values)

    def comparisons(self):
        """(dataset, variant a, variant b, common scenes, {metric: (mean a, mean b)})."""
        out = []
        groups = self.groups()
        for (dataset, a), folders_a in groups.items():
            for (dataset_b, b), folders_b in groups.items():
                if dataset_b != dataset or not variant_label(a) < variant_label(b):
                    continue
                if a and not b:
                    a, b, folders_a, folders_b = b, a, folders_b, folders_a
                by_scene_b = {rf.number: rf for rf in folders_b}
                common = [rf.number for rf in folders_a if rf.number in by_scene_b]
                if not common:
                    continue
                sel_a = [rf for rf in folders_a if rf.number in common]
                sel_b = [by_scene_b[n] for n in common]
                values = {
                    m: (self.group_mean(sel_a, m), self.group_mean(sel_b, m)) for m in self.metrics
                }
                out.append((dataset, a, b, common, values))
        return out

    def seed_selection(self):
        """{(dataset, variant): (n ranked scenes, {drop: {metric: mean}})}."""
        out = {}
        for key, folders in self.groups().items():
            ranked = [rf for rf in folders if isinstance(self.rankings.get(rf.name), list)]
            table = {d: {} for d in DROP_RATES}
            for metric in self.metrics:
                per_scene = []
                for rf in ranked:
                    scores = self.ev.scores.get((rf.name, metric), {})
                    if len(scores) == len(rf.images):
                        per_scene.append(seed_selection(scores, self.rankings[rf.name]))
                for drop in DROP_RATES:
                    table[drop][metric] = (
                        mean(s[drop] for s in per_scene)
                        if per_scene and len(per_scene) == len(ranked)
                        else math.nan
                    )
            out[key] = (len(ranked), table)
        return out


# ---------------------------------------------------------------------------------------------
# Text and Markdown
# ---------------------------------------------------------------------------------------------
def build_blocks(summary: Summary, settings: dict, skipped: list, outputs: dict) -> list:
    """The report as blocks: ("h", text), ("p", text), ("list", [items]), ("table", head, rows)."""
    blocks: list = [("h", "RealFill benchmark report")]
    blocks.append(
        (
            "p",
            f"Generated {datetime.now(UTC):%Y-%m-%d %H:%M UTC}. Results: "
            f"{settings['results_base_dir']}; {len(summary.folders)} folders evaluated, "
            f"{settings['num_images']} images each. Arrows: ↑ higher is better, ↓ lower is better.",
        )
    )
    blocks += metric_blocks(summary, skipped)
    blocks.append(("h2", "Results (mean over scenes of the per-scene mean over images)"))
    rows = [
        [dataset, variant_label(variant), str(len(folders))]
        + [fmt(summary.group_mean(folders, m), m) for m in summary.metrics]
        for (dataset, variant), folders in summary.groups().items()
    ]
    blocks.append(("table", ["dataset", "variant", "scenes", *map(header, summary.metrics)], rows))
    blocks += paper_blocks()
    blocks += comparison_blocks(summary)
    blocks += seed_selection_blocks(summary, settings.get("ranking_matcher"))
    blocks.append(("h2", "Per folder"))
    rows = [
        [rf.name, variant_label(rf.variant)]
        + [fmt(summary.folder_mean(rf, m), m) for m in summary.metrics]
        for rf in summary.folders
    ]
    blocks.append(("table", ["folder", "variant", *map(header, summary.metrics)], rows))
    blocks.append(("h2", "Files"))
    blocks.append(("list", [f"{k}: {v}" for k, v in outputs.items()]))
    return blocks


def metric_blocks(summary: Summary, skipped: list) -> list:
    """Each metric's definition and status, the resolution note, and every problem."""
    ev, metrics = summary.ev, summary.metrics
    rows = []
    for m in metrics:
        spec, run = METRICS[m], ev.runs.get(m)
        params = spec.cache_params()
        extra = ", ".join(f"{k}={v}" for k, v in params.items() if k in ("weights", "variant"))
        status = run.status if run else "not run"
        counts = f"{run.computed} computed, {run.cached} cached" if run else ""
        if run and run.errors:
            counts += f", {len(run.errors)} errors"
        rows.append([header(m), spec.definition + (f" [{extra}]" if extra else ""), status, counts])
    head = ["metric", "definition", "status", "images"]
    blocks: list = [("h2", "Metrics"), ("table", head, rows)]
    blocks.append(
        (
            "p",
            "Resolution: PSNR, SSIM and LPIPS are computed at each ground truth's own size; "
            f"DreamSim, DINO and CLIP resize both full images to {EMBED_SIZE}x{EMBED_SIZE}. "
            "A result whose size differs from its ground truth is first resized to it (Lanczos): "
            + resized_note(ev.resized),
        )
    )
    errors = [f"{m}: {e}" for m in metrics if ev.runs.get(m) for e in ev.runs[m].errors]
    if errors or ev.problems or skipped:
        items = [f"skipped {name}: {reason}" for name, reason in skipped]
        items += ev.problems + errors[:50]
        if len(errors) > 50:
            items.append(f"... and {len(errors) - 50} more image errors (see the JSON scores)")
        blocks += [("h2", "Problems"), ("list", items)]
    return blocks


def paper_blocks() -> list:
    """The published RealBench figures, as PAPER_FILE holds them."""
    rows = [
        [name] + [fmt(v, m) for v, m in zip(values, PAPER_METRICS, strict=True)]
        for name, values in PAPER_ROWS
    ]
    return [
        ("h2", "Paper numbers on RealBench (quoted, not measured here)"),
        (
            "p",
            "Quoted from the RealFill paper (Tang et al., SIGGRAPH 2024; 33 scenes) and "
            "GeoComplete (NeurIPS 2025) for orientation. The paper does not name its "
            "DreamSim/DINO/CLIP variants, so those columns compare only roughly. Sources per "
            f"row: benchmark/{PAPER_FILE.name}.",
        ),
        ("table", ["method", *map(header, PAPER_METRICS)], rows),
    ]


def comparison_blocks(summary: Summary) -> list:
    """Every pair of variants of a dataset, over the scenes both have."""
    comparisons = summary.comparisons()
    if not comparisons:
        return []
    rows = []
    for dataset, a, b, common, values in comparisons:
        for m in summary.metrics:
            va, vb = values[m]
            delta = vb - va
            better = ""
            if not (math.isnan(delta) or delta == 0):
                better = variant_label(b if (delta > 0) == METRICS[m].higher_is_better else a)
            variants = f"{variant_label(a)} vs {variant_label(b)}"
            rows.append(
                [dataset, variants, str(len(common)), header(m)]
                + [fmt(va, m), fmt(vb, m), fmt(delta, m), better]
            )
    head = ["dataset", "variants", "scenes", "metric", "first", "second", "second - first"]
    return [
        ("h2", "Variant comparisons (only scenes present in both)"),
        ("table", [*head, "better"], rows),
    ]


def seed_selection_blocks(summary: Summary, matcher: str | None) -> list:
    """Each metric at every drop rate, and why a folder has no ranking."""
    blocks: list = [
        ("h2", "Seed selection by correspondence ranking"),
        (
            "p",
            f"Each folder's images ranked by loftr_ranking.py (matcher: {matcher}); at drop "
            "rate X the lowest-ranked X% are dropped and the top ceil(n*(1-X)) kept; means over "
            "scenes with a ranking.",
        ),
    ]
    rows = []
    for (dataset, variant), (n_ranked, table) in summary.seed_selection().items():
        if not n_ranked:
            continue
        for drop in DROP_RATES:
            rows.append(
                [dataset, variant_label(variant), str(n_ranked), f"{drop:.0%}"]
                + [fmt(table[drop][m], m) for m in summary.metrics]
            )
    if rows:
        head = ["dataset", "variant", "ranked scenes", "drop", *map(header, summary.metrics)]
        blocks.append(("table", head, rows))
    missing = [r for r in summary.rankings.values() if isinstance(r, str)]
    if missing:
        reasons: dict[str, int] = {}
        for reason in missing:
            reasons[reason] = reasons.get(reason, 0) + 1
        blocks.append(("p", f"Seed selection unavailable for {len(missing)} folders:"))
        blocks.append(("list", [f"{n} x {reason}" for reason, n in reasons.items()]))
    return blocks


def render_markdown(blocks) -> str:
    lines = []
    for block in blocks:
        kind = block[0]
        if kind == "h":
            lines += [f"# {block[1]}", ""]
        elif kind == "h2":
            lines += [f"## {block[1]}", ""]
        elif kind == "p":
            lines += [block[1], ""]
        elif kind == "list":
            lines += [f"- {item}" for item in block[1]] + [""]
        elif kind == "table":
            head, rows = block[1], block[2]
            lines.append("| " + " | ".join(head) + " |")
            lines.append("|" + "|".join("---" for _ in head) + "|")
            lines += ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in rows]
            lines.append("")
    return "\n".join(lines)


def render_text(blocks) -> str:
    lines = []
    for block in blocks:
        kind = block[0]
        if kind in ("h", "h2"):
            char = "=" if kind == "h" else "-"
            lines += [block[1], char * len(block[1]), ""]
        elif kind == "p":
            lines += [block[1], ""]
        elif kind == "list":
            lines += [f"  * {item}" for item in block[1]] + [""]
        elif kind == "table":
            head, rows = block[1], block[2]
            if "definition" in head:  # long texts: one entry per metric instead of columns
                for row in rows:
                    lines += [f"{row[0]}: {row[2]} ({row[3]})", f"    {row[1]}"]
                lines.append("")
                continue
            widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
            for row in [head, ["-" * w for w in widths], *rows]:
                lines.append(
                    "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
                )
            lines.append("")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Per-image files
# ---------------------------------------------------------------------------------------------
def score_rows(summary: Summary) -> list[dict]:
    rows = []
    for rf in summary.folders:
        ranking = summary.rankings.get(rf.name)
        ranks = {n: i + 1 for i, n in enumerate(ranking)} if isinstance(ranking, list) else {}
        for image in rf.images:
            row = {
                "folder": rf.name,
                "dataset": rf.dataset,
                "scene": rf.number,
                "variant": variant_label(rf.variant),
                "image": image.name,
                "rank": ranks.get(image.name),
                "resized": (rf.name, image.name) in summary.ev.resized,
            }
            for m in summary.metrics:
                row[m] = summary.ev.scores.get((rf.name, m), {}).get(image.name)
            rows.append(row)
    return rows


def write_scores(summary: Summary, csv_path: Path, json_path: Path) -> None:
    rows = score_rows(summary)
    fields = ["folder", "dataset", "scene", "variant", "image", "rank", "resized", *summary.metrics]
    with atomic_path(csv_path) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    atomic_write_json(
        {
            "schema_version": 1,
            "metrics": {
                m: {
                    "higher_is_better": METRICS[m].higher_is_better,
                    "version": METRICS[m].version,
                    "params": METRICS[m].cache_params(),
                    "status": summary.ev.runs[m].status if m in summary.ev.runs else "not run",
                }
                for m in summary.metrics
            },
            "scores": rows,
        },
        json_path,
    )


# ---------------------------------------------------------------------------------------------
# Pictures (skipped when what they show is unchanged)
# ---------------------------------------------------------------------------------------------
def _digest(obj) -> str:
    blob = json.dumps([PICTURES_VERSION, obj], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def _unchanged(path: Path, digest: str, stamps: dict) -> bool:
    return path.is_file() and stamps.get(path.name) == digest


def write_plots(summary: Summary, plots_dir: Path) -> list[Path]:
    groups = summary.groups()
    bars = {
        f"{d} {variant_label(v)}": [summary.group_mean(f, m) for m in summary.metrics]
        for (d, v), f in groups.items()
    }
    seeds = {
        f"{d} {variant_label(v)}": [[t[drop][m] for drop in DROP_RATES] for m in summary.metrics]
        for (d, v), (n, t) in summary.seed_selection().items()
        if n
    }
    stamps_path = plots_dir / ".inputs.json"
    stamps = _read_stamps(stamps_path)
    wanted = {
        "metrics.png": (_digest([summary.metrics, bars]), lambda p: _bar_plot(summary, bars, p)),
        "seed_selection.png": (
            _digest([summary.metrics, seeds]),
            lambda p: _seed_plot(summary, seeds, p),
        ),
    }
    if not seeds:
        wanted.pop("seed_selection.png")
    written = []
    for name, (digest, draw) in wanted.items():
        path = plots_dir / name
        if not _unchanged(path, digest, stamps):
            plots_dir.mkdir(parents=True, exist_ok=True)
            draw(path)
            stamps[name] = digest
        written.append(path)
    atomic_write_json(stamps, stamps_path)
    return written


def _read_stamps(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _plotted(summary: Summary) -> list[str]:
    """Metrics with at least one score (an unavailable metric gets no empty panel)."""
    return [
        m for m in summary.metrics if any(k[1] == m and v for k, v in summary.ev.scores.items())
    ]


def _bar_plot(summary: Summary, bars: dict, path: Path) -> None:
    plt = _pyplot()
    metrics = _plotted(summary) or summary.metrics
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics), 3.6), squeeze=False)
    labels = list(bars)
    for ax, m in zip(axes[0], metrics, strict=True):
        i = summary.metrics.index(m)
        values = [bars[label][i] for label in labels]
        values = [0 if math.isnan(v) or math.isinf(v) else v for v in values]
        ax.bar(range(len(labels)), values, color=[f"C{j}" for j in range(len(labels))])
        ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right", fontsize=7)
        ax.set_title(header(m))
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)


def _seed_plot(summary: Summary, seeds: dict, path: Path) -> None:
    plt = _pyplot()
    metrics = _plotted(summary) or summary.metrics
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics), 3.2), squeeze=False)
    drops = [100 * d for d in DROP_RATES]
    for ax, m in zip(axes[0], metrics, strict=True):
        i = summary.metrics.index(m)
        for label, per_metric in seeds.items():
            ax.plot(drops, per_metric[i], marker="o", label=label)
        ax.set_title(header(m))
        ax.set_xlabel("drop rate (%)")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)


def write_contact_sheets(summary: Summary, sheets_dir: Path) -> list[Path]:
    stamps_path = sheets_dir / ".inputs.json"
    stamps = _read_stamps(stamps_path)
    written, todo = [], []
    for rf in summary.folders:
        ranking = summary.rankings.get(rf.name)
        order = ranking if isinstance(ranking, list) else [p.name for p in rf.images]
        ranked = isinstance(ranking, list)
        matches = ranking_scores(rf) if ranked else {}
        shown = [m for m in summary.metrics if summary.ev.scores.get((rf.name, m))][:3]
        captions = {}
        for i, name in enumerate(order):
            title = f"#{i + 1} {name}" if ranked else name
            if matches.get(name) is not None:
                title += f" ({matches[name]} matches)"
            scores = summary.ev.scores
            captions[name] = (
                title,
                " ".join(f"{m} {fmt(scores[(rf.name, m)].get(name), m)}" for m in shown),
            )
        hashes = summary.ev.hashes
        digest = _digest(
            [
                order,
                captions,
                [hashes.get(str(p)) for p in rf.images],
                hashes.get(str(rf.gt)),
                hashes.get(str(rf.mask)),
                ranked,
            ]
        )
        path = sheets_dir / f"{rf.name}.jpg"
        if not _unchanged(path, digest, stamps):
            todo.append((rf, order, captions, ranked, path, digest))
        written.append(path)
    if todo:
        sheets_dir.mkdir(parents=True, exist_ok=True)
        from concurrent.futures import ThreadPoolExecutor

        # PIL decodes and resizes without holding the GIL: threads use every core
        def sheet(job) -> bool:
            try:
                contact_sheet(*job[:5])
                return True
            except Exception as err:  # a picture is never worth the report: say so, go on
                print(f"contact sheet of {job[0].name} not drawn: {err}", file=sys.stderr)
                return False

        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            drawn = list(pool.map(sheet, todo))
        for (*_, path, digest), ok in zip(todo, drawn, strict=True):
            if ok:
                stamps[path.name] = digest
    if written:
        atomic_write_json(stamps, stamps_path)
    return written


def contact_sheet(rf: ResultFolder, order, captions, ranked: bool, path: Path) -> None:
    """Target with the mask outlined in red, ground truth, then completions in rank order."""
    gt = load_image(rf.gt)
    fill_mask = load_mask(rf.mask)
    if fill_mask.shape != (gt.size[1], gt.size[0]):  # the metrics report it; draw it anyway
        small = Image.fromarray(fill_mask.astype(np.uint8) * 255)
        fill_mask = np.asarray(small.resize(gt.size, Image.Resampling.NEAREST)) > 0
    target_path = rf.scene_dir / "target" / "target.png"
    target = load_image(target_path) if target_path.is_file() else gt
    if target.size != gt.size:
        target = target.resize(gt.size)
    width = max(1, round(gt.size[0] * THUMB / gt.size[1]))

    def thumb(image: Image.Image) -> Image.Image:
        return image.resize((width, THUMB), Image.Resampling.LANCZOS)

    outlined = np.asarray(target).copy()
    edge = fill_mask & ~_erode(fill_mask, max(1, gt.size[1] // THUMB + 1))
    outlined[edge] = (255, 0, 0)
    tiles = [
        (thumb(Image.fromarray(outlined)), ("target", "fill region outlined in red")),
        (thumb(gt), ("ground truth", "")),
    ]
    names = {p.name: p for p in rf.images}
    for name in order:
        try:
            tiles.append((thumb(load_image(names[name])), captions[name]))
        except Exception:  # the scores name the error; the sheet shows a blank in its place
            tiles.append((Image.new("RGB", (width, THUMB), "lightgrey"), (name, "unreadable")))
    columns, caption_h = 6, 28
    rows = math.ceil(len(tiles) / columns)
    sheet = Image.new("RGB", (columns * (width + 4), rows * (THUMB + caption_h) + 20), "white")
    draw = ImageDraw.Draw(sheet)
    draw.text(
        (4, 4), f"{rf.name} ({'rank order' if ranked else 'no ranking: file order'})", fill="black"
    )
    for i, (tile, caption) in enumerate(tiles):
        x, y = (i % columns) * (width + 4), 20 + (i // columns) * (THUMB + caption_h)
        sheet.paste(tile, (x, y))
        draw.text((x + 2, y + THUMB + 1), caption[0], fill="black")
        draw.text((x + 2, y + THUMB + 13), caption[1], fill="black")
    with atomic_path(path) as tmp:
        sheet.save(tmp, quality=85)


def _erode(mask: np.ndarray, iterations: int) -> np.ndarray:
    from scipy.ndimage import binary_erosion

    return binary_erosion(mask, iterations=iterations, border_value=0)


# ---------------------------------------------------------------------------------------------
def report_paths(output_file: Path) -> dict[str, Path]:
    """Every file and folder a report for `output_file` writes: {what: path}."""
    stem = output_file.parent / output_file.stem
    return {
        "text report": output_file,
        "Markdown report": (
            stem.with_suffix(".md") if output_file.suffix != ".md" else Path(f"{stem}.report.md")
        ),
        "per-image scores (CSV)": Path(f"{stem}_scores.csv"),
        "per-image scores (JSON)": Path(f"{stem}_scores.json"),
        "plots": Path(f"{stem}_plots"),
        "contact sheets": Path(f"{stem}_contact_sheets"),
    }


def foreign_report_files(output_file: Path) -> list[Path]:
    """The report files for `output_file` that exist but that no earlier report wrote (its
    scores JSON marks a report's files as its own): a report never overwrites those."""
    paths = report_paths(output_file)
    try:
        data = json.loads(paths["per-image scores (JSON)"].read_text())
        if data.get("schema_version") == 1 and {"metrics", "scores"} <= set(data):
            return []
    except (OSError, ValueError, AttributeError):
        pass
    return [p for p in paths.values() if p.exists()]


def write_reports(
    summary: Summary, output_file: Path, settings: dict, skipped: list, pictures: bool = True
) -> dict:
    """Write every report file next to `output_file`; returns {what: path}."""
    output_file.parent.mkdir(parents=True, exist_ok=True)
    stem = output_file.parent / output_file.stem
    outputs = dict(list(report_paths(output_file).items())[:4])
    write_scores(summary, outputs["per-image scores (CSV)"], outputs["per-image scores (JSON)"])
    if pictures and summary.folders:
        plots = write_plots(summary, Path(f"{stem}_plots"))
        outputs["plots"] = ", ".join(str(p) for p in plots)
        write_contact_sheets(summary, Path(f"{stem}_contact_sheets"))
        outputs["contact sheets"] = f"{stem}_contact_sheets/<folder>.jpg"
    blocks = build_blocks(summary, settings, skipped, {k: str(v) for k, v in outputs.items()})
    with atomic_path(outputs["Markdown report"]) as tmp:
        tmp.write_text(render_markdown(blocks))
    with atomic_path(output_file) as tmp:
        tmp.write_text(render_text(blocks))
    return outputs
