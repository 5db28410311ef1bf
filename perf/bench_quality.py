"""Quality gate: does RealFill fine-tuning improve on the base model, on every example scene?

Per example scene (data/Custom/*), through the project's own scripts:
  - untuned:  infer.py straight from the toy base model (no fine-tuning);
  - RealFill: refill.py round 1 (train_realfill.py on the scene, then infer.py);
  - ReFill:   refill.py round 2 (the best round-1 completions added to the references);
  - samplers: the round-1 model sampled again with DPM-Solver++ at 25 and 50 steps, timed
    against the paper's DDPM 200 (completions.json records each run's generation time).
Then benchmarks.py scores all of them (masked PSNR and SSIM against gt.png) with seed
selection at 0/25/50/75% drop (SIFT ranking), and this script writes the tables.

    python perf/bench_quality.py                      # about 20 minutes on 2 CPU cores
    python perf/bench_quality.py --scenes 1 --max_train_steps 20 --name smoke
Results: perf/results/<name>.md and .json (default name: quality_gate).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import realfill_utils as ru  # noqa: E402
from benchmark.suite import DROP_RATES, seed_selection  # noqa: E402

GOAL_PSNR_GAIN = 2.0  # dB of masked PSNR that RealFill must add over the un-tuned base
METRICS = ("PSNR", "SSIM")  # the learned metrics need weights this machine cannot download
SAMPLERS = {  # variant suffix -> (scheduler, steps); "" is round 1 itself (the paper's DDPM 200)
    "": ("ddpm", 200),
    "dpmpp25": ("dpmsolver++", 25),
    "dpmpp50": ("dpmsolver++", 50),
}


def run(cmd: list, log: Path) -> float:
    """Run one script, its output to `log`; return its wall time; stop on failure."""
    start = time.perf_counter()
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as f:
        code = subprocess.run([str(c) for c in cmd], cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
    if code.returncode:
        sys.exit(f"failed ({code.returncode}): {' '.join(map(str, cmd))}\nlog: {log}")
    return time.perf_counter() - start


def scene_runs(scene: Path, args, out: Path) -> dict:
    """Every result folder of one scene; returns {variant: completions.json record}."""
    name = f"{scene.parent.name}-{scene.name}"
    work = out / name
    results = out / "results"
    base = [sys.executable]
    common = [
        "--resolution", args.resolution, "--num_images", args.num_images,
    ]  # fmt: skip
    print(f"== {name}: RealFill and ReFill (refill.py)", flush=True)
    run(base + [
        "refill.py", "--train_data_dir", scene, "--output_dir", work,
        "--pretrained_model_name_or_path", args.base_model, *common,
        "--max_train_steps", args.max_train_steps, "--train_batch_size", 16,
        "--scheduler", "ddpm", "--num_inference_steps", 200, "--matcher", "sift",
        "--train_args", "--report_to none --validation_steps 0",
    ], out / "logs" / f"{name}-refill.log")  # fmt: skip
    records = {}
    for variant, folder in (("", f"{name}-results"), ("refill", f"{name}-results-refill")):
        link = results / folder
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.is_symlink():
            link.symlink_to(work / "results" / folder, target_is_directory=True)
        records[variant] = json.loads((link / "completions.json").read_text())
    target = scene / "target"
    jobs = {"untuned": (args.base_model, "ddpm", 200)}
    model = work / "models" / f"{name}-model"
    for variant, (scheduler, steps) in SAMPLERS.items():
        if variant:
            jobs[variant] = (model, scheduler, steps)
    for variant, (model_path, scheduler, steps) in jobs.items():
        print(f"== {name}: {variant} ({scheduler}, {steps} steps)", flush=True)
        folder = results / f"{name}-results-{variant}"
        done = folder / "completions.json"
        if done.is_file():  # a finished run with the same settings is reused (resumable bench)
            record = json.loads(done.read_text())
            same = (record["scheduler"], record["num_inference_steps"], len(record["images"]))
            if same == (scheduler, steps, args.num_images):
                records[variant] = record
                continue
        run(base + [
            "infer.py", "--model_path", model_path, "--output_dir", folder,
            "--validation_image", target / "target.png",
            "--validation_mask", target / "mask.png", *common,
            "--scheduler", scheduler, "--num_inference_steps", steps,
        ], out / "logs" / f"{name}-{variant}.log")  # fmt: skip
        records[variant] = json.loads((folder / "completions.json").read_text())
    return records


def score(out: Path, args) -> dict:
    """benchmarks.py over every folder; returns {(scene, variant): {metric: {drop: mean}}}."""
    print("== benchmarks.py", flush=True)
    report = out / "report.txt"
    run([
        sys.executable, "benchmarks.py", "--results_base_dir", out / "results",
        "--custom_dataset_dir", ROOT / "data", "--cache_dir", out / "cache",
        "--output_file", report, "--metrics", *METRICS, "--ranking_matcher", "sift",
        "--num_images", args.num_images,
    ], out / "logs" / "benchmarks.log")  # fmt: skip
    rows = json.loads((out / "report_scores.json").read_text())["scores"]
    by_folder: dict = {}
    for row in rows:
        variant = "" if row["variant"] == "base" else row["variant"]  # the report's name for ""
        key = (f"{row['dataset']}-{row['scene']}", variant)
        by_folder.setdefault(key, []).append(row)
    table = {}
    for key, images in by_folder.items():
        if any(r["rank"] is None for r in images):
            sys.exit(f"{key}: completions without a ranking; see {out / 'logs'}")
        order = [r["image"] for r in sorted(images, key=lambda r: r["rank"])]
        table[key] = {m: seed_selection({r["image"]: r[m] for r in images}, order) for m in METRICS}
    return table


def mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else math.nan


def write_results(name: str, args, scenes: list[str], table: dict, records: dict) -> Path:
    """perf/results/<name>.json (everything) and .md (the tables and the verdict)."""
    variants = {"untuned": "un-tuned toy base", "": "RealFill", "refill": "ReFill"}
    lines = [
        f"# Quality gate ({name})",
        "",
        f"Command: `{' '.join(['python perf/bench_quality.py', *sys.argv[1:]])}`",
        f"Base model: `{Path(args.base_model).name}`; scenes: {', '.join(scenes)}; "
        f"{args.num_images} completions each at {args.resolution} px; RealFill trained "
        f"{args.max_train_steps} steps at batch 16; DDPM 200 unless named; SIFT ranking. "
        "Scores: masked PSNR (dB) / masked SSIM against gt.png, mean over scenes.",
        "",
        "## Un-tuned vs RealFill vs ReFill, by seed-selection drop rate",
        "",
        "| method | " + " | ".join(f"drop {int(d * 100)}%" for d in DROP_RATES) + " |",
        "|---|" + "---|" * len(DROP_RATES),
    ]
    means = {}
    for variant, label in variants.items():
        cells = []
        for drop in DROP_RATES:
            psnr = mean(table[(s, variant)]["PSNR"][drop] for s in scenes)
            ssim = mean(table[(s, variant)]["SSIM"][drop] for s in scenes)
            means[(variant, drop)] = (psnr, ssim)
            cells.append(f"{psnr:.2f} / {ssim:.3f}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    gain = means[("", 0.0)][0] - means[("untuned", 0.0)][0]
    ssim_gain = means[("", 0.0)][1] - means[("untuned", 0.0)][1]
    met = gain >= GOAL_PSNR_GAIN and ssim_gain > 0
    lines += [
        "",
        f"RealFill minus un-tuned, all 16 kept: {gain:+.2f} dB PSNR, {ssim_gain:+.3f} SSIM. "
        f"Goal (at least +{GOAL_PSNR_GAIN:.0f} dB and better SSIM): "
        f"**{'met' if met else 'not met'}**.",
        "",
        "## Per scene (all completions kept)",
        "",
        "| scene | " + " | ".join(variants.values()) + " |",
        "|---|" + "---|" * len(variants),
    ]
    for s in scenes:
        cells = [
            f"{table[(s, v)]['PSNR'][0.0]:.2f} / {table[(s, v)]['SSIM'][0.0]:.3f}" for v in variants
        ]
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Samplers on the RealFill model (all completions kept)",
        "",
        "Generation time is infer.py's own `generate_s` (models loaded), mean over scenes, "
        "measured in this run on this machine.",
        "",
        "| sampler | steps | PSNR | SSIM | generation s (16 images) | speed-up |",
        "|---|---|---|---|---|---|",
    ]
    ddpm_time = mean(records[s][""]["timings"]["generate_s"] for s in scenes)
    for variant, (scheduler, steps) in SAMPLERS.items():
        psnr = mean(table[(s, variant)]["PSNR"][0.0] for s in scenes)
        ssim = mean(table[(s, variant)]["SSIM"][0.0] for s in scenes)
        seconds = mean(records[s][variant]["timings"]["generate_s"] for s in scenes)
        lines.append(
            f"| {scheduler} | {steps} | {psnr:.2f} | {ssim:.3f} | {seconds:.1f} | "
            f"{ddpm_time / seconds:.2f}x |"
        )
    results_dir = ROOT / "perf" / "results"
    md = results_dir / f"{name}.md"
    ru.atomic_write_json(
        {
            "command": sys.argv,
            "settings": {k: str(v) for k, v in vars(args).items()},
            "scores": {f"{s}|{v}": t for (s, v), t in table.items()},
            "timings": {
                f"{s}|{v}": r["timings"] for s, rs in records.items() for v, r in rs.items()
            },
            "psnr_gain_db": gain,
            "ssim_gain": ssim_gain,
            "goal_met": met,
        },
        md.with_suffix(".json"),
    )
    with ru.atomic_path(md) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    return md


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=ru.HelpFormatter)
    p.add_argument("--base_model", type=Path, default=ru.TOY_MODEL)
    p.add_argument("--scenes", nargs="*", default=None, help="Custom scene numbers (default: all)")
    p.add_argument("--resolution", type=int, default=None, help="default: the toy model's own")
    p.add_argument("--max_train_steps", type=int, default=300)
    p.add_argument("--num_images", type=int, default=16)
    p.add_argument("--output_dir", type=Path, default=ROOT / "runs" / "quality")
    p.add_argument("--name", default="quality_gate", help="results file name in perf/results")
    args = p.parse_args(argv)
    if args.resolution is None:
        args.resolution = json.loads((args.base_model / "toy_model.json").read_text())["resolution"]
    numbers = args.scenes or sorted(
        (d.name for d in (ROOT / "data" / "Custom").iterdir() if d.name.isdigit()), key=int
    )
    scenes = [ROOT / "data" / "Custom" / n for n in numbers]
    out = args.output_dir.resolve()
    records = {f"Custom-{s.name}": scene_runs(s, args, out) for s in scenes}
    table = score(out, args)
    md = write_results(args.name, args, list(records), table, records)
    print(md.read_text())


if __name__ == "__main__":
    main()
