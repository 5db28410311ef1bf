"""The whole RealFill method on one example scene, offline, on the CPU: fine-tune, generate the
completions, rank them, measure them, and show what fine-tuning did. A scene of your own
works too (--scene); without target/gt.png there is nothing to measure, and the demo ranks
the completions and shows them.

Each stage runs the project's own script, exactly as a user would, so the demo is also the
reference for the commands. The base model is the committed toy model (models/toy-sd2-inpainting,
trained by train_toy_model.py on images no example scene uses), fine-tuned with the settings its
folder recommends (realfill_recipe.json). The un-tuned base completes the same scene with the
same seeds, so the report and the contact sheet show both side by side. The real model is one
flag away (on a GPU):

    python demo.py                                   # offline, CPU, a few minutes
    python demo.py --scene data/Custom/3             # another example scene
    python demo.py --pretrained_model_name_or_path sd2-community/stable-diffusion-2-inpainting \\
        --resolution 512 --max_train_steps 2000 --num_inference_steps 200 --scheduler ddpm \\
        --matcher loftr
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

import loftr_ranking as lr
import realfill_utils as ru
import scene_engine as engine

ROOT = Path(__file__).resolve().parent
TINY_MODEL = ROOT / "models" / "tiny-sd2-inpainting"  # random weights: if the toy model is gone
SHEET_COLUMNS = 8  # completions per row of the contact sheet, best-ranked first
SCRIPT = "demo.py"  # the owner recorded in the output folder's manifest
REPORT_NAME = "benchmark_report.txt"
DATASET_VIEW = "dataset"  # in the output folder: a link to the scene, the benchmark's dataset
SHEET_SUFFIX = "-untuned-vs-realfill.jpg"  # <dataset>-<scene>-untuned-vs-realfill.jpg
RECIPE_FLAGS = ("resolution", "max_train_steps", "train_batch_size", "num_images",
                "num_inference_steps", "scheduler")  # fmt: skip


def run(stage: str, command: list) -> None:
    """Run one stage's script, streaming its progress; StageFailed if it fails."""
    print(f"\n== {stage}: {' '.join(map(str, command[1:]))}", flush=True)
    start = time.perf_counter()
    engine.run_script(command)
    print(f"== {stage} done in {time.perf_counter() - start:.0f} s", flush=True)


def base_model(requested: str | None) -> str:
    """The requested base, else the committed toy model, else a random tiny one (workflow only)."""
    if requested is not None:
        return requested
    if (ru.TOY_MODEL / "model_index.json").is_file():
        return str(ru.TOY_MODEL)
    print(f"{ru.TOY_MODEL} is missing: using a random tiny model, whose completions are noise")
    if not (TINY_MODEL / "model_index.json").is_file():
        run("tiny model", [ROOT / "make_tiny_model.py", "--output_dir", TINY_MODEL])
    return str(TINY_MODEL)


def summary(scores_file: Path, folders: dict[str, str]) -> tuple[list[str], list[str]]:
    """Mean masked PSNR / SSIM / LPIPS per method, all completions and the best-ranked quarter;
    and the methods whose completions have no ranking (the benchmark's ranking failed)."""
    rows = json.loads(scores_file.read_text())["scores"]
    lines = ["| method | completions | PSNR | SSIM | LPIPS |", "|---|---|---|---|---|"]
    unranked = []
    for label, variant in folders.items():
        images = [r for r in rows if r["variant"] == (variant or "base")]
        ranked = sorted(images, key=lambda r: (r["rank"] is None, r["rank"] or 0))
        if images and all(r["rank"] is None for r in images):
            unranked.append(label)
        for kept, subset in (("all", ranked), ("best 25%", ranked[: max(1, len(ranked) // 4)])):
            if kept != "all" and label in unranked:
                lines.append(f"| {label} | {kept} | not ranked | | |")
                continue
            cells = []
            for metric in ("PSNR", "SSIM", "LPIPS"):
                values = [r[metric] for r in subset if r.get(metric) is not None]
                cells.append(f"{sum(values) / len(values):.3f}" if values else "n/a")
            lines.append(f"| {label} | {kept} | " + " | ".join(cells) + " |")
    return lines, unranked


def current_ranking(folder: Path) -> list[str] | None:
    """The ranking's order of the folder's completions, best first, if it ranks exactly the
    completions there now (by content: a failed re-ranking leaves an older file behind)."""
    from benchmark.suite import sha256_file

    try:
        candidates = json.loads((folder / lr.SCORES_FILE).read_text())["candidates"]
        ranked = {c["image"]: c["sha256"] for c in candidates}
    except (OSError, ValueError, KeyError, TypeError):
        return None
    now = {p.name: sha256_file(p) for p in ru.ranked_images(folder)}
    return [c["image"] for c in candidates] if ranked == now else None


def contact_sheet(scene: Path, folders: dict[str, Path], path: Path) -> None:
    """One image: target and ground truth, then each method's best-ranked completions."""
    from PIL import Image, ImageDraw

    target = ru.load_image(scene / "target" / "target.png")
    cell = (160, round(160 * target.height / target.width))
    gt = scene / "target" / "gt.png"
    rows = [[target, ru.load_image(gt)] if gt.is_file() else [target]]
    labels = ["target, ground truth" if gt.is_file() else "target"]
    for label, folder in folders.items():
        names = current_ranking(folder)
        if names is not None:
            labels.append(f"{label}, best-ranked first")
        else:  # the ranking failed (the summary says so): the first seeds
            names = [p.name for p in ru.numbered_images(folder)]
            labels.append(f"{label}, not ranked: seed order")
        rows.append([ru.load_image(folder / name) for name in names[:SHEET_COLUMNS]])
    margin = 18
    sheet = Image.new("RGB", (cell[0] * SHEET_COLUMNS, (cell[1] + margin) * len(rows)), "white")
    draw = ImageDraw.Draw(sheet)
    for r, (images, label) in enumerate(zip(rows, labels, strict=True)):
        y = r * (cell[1] + margin)
        draw.text((4, y + 3), label, fill="black")
        for c, image in enumerate(images):
            sheet.paste(image.resize(cell, Image.Resampling.LANCZOS), (c * cell[0], y + margin))
    ru.atomic_save_image(sheet, path)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=ru.HelpFormatter)
    p.add_argument(
        "--scene", type=Path, default=ROOT / "data" / "Custom" / "1", help="a scene folder"
    )
    p.add_argument(
        "--pretrained_model_name_or_path",
        default=None,
        help="base model; default: the toy model in models/toy-sd2-inpainting",
    )
    p.add_argument(
        "--output_dir",
        type=Path,
        default=ROOT / "runs" / "demo",
        help="models, completions, report",
    )
    ru.add_recipe_flags(p, RECIPE_FLAGS, note="the base's recipe, else {value}")
    p.add_argument(
        "--matcher", default="sift", choices=["sift", "loftr"], help="ranking of completions"
    )
    p.add_argument(
        "--loftr_weights",
        default=None,
        metavar="PATH",
        help=f"--matcher loftr: a local LoFTR checkpoint (default: ${lr.WEIGHTS_ENV}, else "
        "kornia's cached download)",
    )
    args = p.parse_args(argv)
    if args.loftr_weights and args.matcher != "loftr":
        p.error("--loftr_weights is for --matcher loftr (the default matcher, sift, needs none)")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    return ru.run_main(
        lambda: demo(args),
        interrupted="interrupted: run the same command again to continue",
        failed={engine.StageFailed: "demo stopped: {err}"},
    )


def claim_output(scene: Path, out: Path, sheet_name: str) -> None:
    """Check the scene and the output folder before anything runs (exit 2 with one message):
    the scene loads; the output folder overlaps no scene and holds only the demo's outputs.
    A folder an earlier demo filled before outputs were recorded (its report is there) is
    adopted."""
    from benchmark.report import foreign_report_files, report_paths

    ru.load_scene(scene)  # every input problem, now
    report = out / REPORT_NAME
    entries = ["models", "results", DATASET_VIEW, "benchmark_cache", sheet_name]
    entries += [p.name for p in report_paths(report).values()]

    def ours(name: str) -> bool:
        return name in entries or name.endswith(SHEET_SUFFIX)

    if not foreign_report_files(report):
        ru.adopt_earlier_output(out, SCRIPT, REPORT_NAME, ours, {"the scene": scene})
    ru.claim_output_dir(out, SCRIPT, entries, {"the scene": scene})


def demo(args: argparse.Namespace) -> None:
    """Fine-tune, complete with the tuned and the un-tuned model, rank and measure, compare."""
    scene = args.scene.resolve()
    # the benchmark reads <dataset>-<scene>-results against <dataset dir>/<scene>
    dataset = "RealBench" if scene.parent.name == "RealBench" else "Custom"
    # the benchmark's scene names are letters, digits and _: data/Custom/1 -> Custom-1-results,
    # my-photos/kitchen 2 -> Custom-kitchen_2-results
    bench, number = dataset, re.sub(r"[^A-Za-z0-9_]", "_", scene.name)
    out = args.output_dir.resolve()
    model = base_model(args.pretrained_model_name_or_path)
    given = {name: getattr(args, name) for name in RECIPE_FLAGS}
    recipe = ru.Recipe.for_model(model, **given)  # the toy's realfill_recipe.json, else the paper
    # what the stages would refuse (a resolution the model cannot take; LoFTR without weights),
    # now, before anything is written, not after the training
    engine.check_stage_args(recipe)
    matcher = lr.check_matcher(args.matcher, weights=args.loftr_weights)  # not one: fail now
    if args.loftr_weights:  # the benchmark's ranking reads them from the environment
        os.environ[lr.WEIGHTS_ENV] = matcher.weights  # resolved: an absolute path, or random
    claim_output(scene, out, sheet_name=f"{bench}-{number}{SHEET_SUFFIX}")
    model_dir = out / "models" / f"{bench}-{number}-model"
    results = {
        "un-tuned base": out / "results" / f"{bench}-{number}-results-untuned",
        "RealFill": out / "results" / f"{bench}-{number}-results",
    }
    steps = recipe.max_train_steps
    quiet = ["--checkpointing_steps", str(max(1, steps // 2)), "--validation_steps", "0",
             "--report_to", "none"]  # fmt: skip
    run("train", engine.train_command(recipe, scene, model_dir, quiet))
    for label, model_path in (("RealFill", model_dir), ("un-tuned base", model)):
        resolution = ["--resolution", str(recipe.resolution)]
        command = engine.infer_command(recipe, scene, model_path, results[label], resolution)
        run(f"infer ({label})", command)
    report = out / REPORT_NAME
    # The benchmark reads a dataset folder and refuses to write inside one; the scene's own
    # parent may hold anything, this output folder included, so it reads a folder of one link.
    view = out / DATASET_VIEW
    engine.make_view(view, [scene], names=[number])
    has_gt = (scene / "target" / "gt.png").is_file()
    # without a ground truth there is nothing to score, but the ranking needs none
    metrics = ["PSNR", "SSIM", "LPIPS"] if has_gt else ["loftr"]
    sheet = out / f"{bench}-{number}{SHEET_SUFFIX}"  # claimed above
    try:
        run("rank and measure" if has_gt else "rank", engine.benchmark_command(
            out / "results", {dataset: view}, report, out / "benchmark_cache",
            metrics=metrics, ranking_matcher=args.matcher, num_images=recipe.num_images,
        ))  # fmt: skip
    except engine.StageFailed:  # a failed ranking (the scores' report says what it could)
        contact_sheet(scene, results, sheet)
        print(f"Contact sheet, un-tuned vs RealFill (seed order where not ranked): {sheet}")
        raise
    contact_sheet(scene, results, sheet)
    if not has_gt:
        print(
            f"\nNo ground truth ({scene / 'target' / 'gt.png'}), so no scores: the contact sheet "
            f"shows each method's best-ranked completions.\nCompletions: {results['RealFill']} "
            f"(ranked: {results['RealFill'] / lr.SCORES_FILE})\n"
            f"Contact sheet, un-tuned vs RealFill: {sheet}"
        )
        return
    table, unranked = summary(
        out / f"{report.stem}_scores.json", {"un-tuned base": "untuned", "RealFill": ""}
    )
    print("\nMasked scores inside the hole (PSNR dB and SSIM: higher is better; LPIPS: lower):")
    print("\n".join(table))
    print(
        f"\nCompletions: {results['RealFill']}\nReport: {report} (and {report.with_suffix('.md')})"
        f"\nContact sheet, un-tuned vs RealFill: {sheet}"
    )
    if unranked:  # the benchmark scored them, but seed selection was asked for too
        raise engine.StageFailed(
            f"the completions of {' and '.join(unranked)} were not ranked ({args.matcher}): the "
            f"report {report} says why"
        )


if __name__ == "__main__":
    ru.interrupt_on_sigterm()  # stops the running stage too, as Ctrl-C does
    sys.exit(main())
