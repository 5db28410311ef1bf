"""Choose a base model's recommended RealFill fine-tuning settings on validation scenes that no
example scene uses, and record the choice in the model's folder (realfill_recipe.json).

The validation scenes are rendered at run time with make_example_scenes' own camera model
(references from other viewpoints, other exposures, JPEG) from scikit-image's
`motorcycle_left.png`, a photo that neither the example scenes nor the toy model's training
use. They are never committed (the photo's licence is not stated), so the choice cannot be
tuned to the example scenes that the quality gate scores. Each candidate setting runs
train_realfill.py and infer.py (16 completions, DPM-Solver++ 25 steps) on every validation
scene; masked PSNR / SSIM inside the hole decide (mean PSNR over scenes, then SSIM), among the
candidates within --max_train_images if it is given. Then,
with the chosen setting's models, geometry-guided sampling (infer.py --prior_image, the scene's
warp fill from warp_fill.py) is measured at several --strength values; the best is recorded.

    python perf/bench_recipe.py                         # about 45 minutes on 2 CPU cores
    python perf/bench_recipe.py --no-write              # measure only, leave the folder alone
Results: perf/results/recipe.md and .json; the winner goes to <base>/realfill_recipe.json.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import realfill_utils as ru  # noqa: E402
import scene_engine as engine  # noqa: E402

RESOLUTION = 64  # the toy model's own
STEPS = 400
NUM_IMAGES = 16
INFER = {"scheduler": "dpmsolver++", "num_inference_steps": 25}
COMMON = {"train_batch_size": 16, "lr_warmup_steps": 50, "text_encoder_learning_rate": 4e-5}
CANDIDATES = {  # name -> train_realfill.py flags on top of COMMON (max_train_steps: STEPS)
    "attention+conv LoRA r16, 1e-3": {
        "lora_target": "attention+conv",
        "lora_rank": 16,
        "lora_alpha": 16,
        "unet_learning_rate": 1e-3,
    },
    "full UNet, 1e-4": {"lora_target": "full", "unet_learning_rate": 1e-4},
    "full UNet, 3e-4": {"lora_target": "full", "unet_learning_rate": 3e-4},
    "full UNet, 1e-3": {"lora_target": "full", "unet_learning_rate": 1e-3},
    # shorter runs: what a shorter demo would cost (training is most of the demo's time; see
    # --max_train_images and perf/results/quality_gate_recipe_200_steps.md)
    "full UNet, 1e-3, 250 steps": {
        "lora_target": "full", "unet_learning_rate": 1e-3, "max_train_steps": 250,
    },
    "full UNet, 1e-3, 200 steps": {
        "lora_target": "full", "unet_learning_rate": 1e-3, "max_train_steps": 200,
    },
    "full UNet, 1e-3, 100 steps": {
        "lora_target": "full", "unet_learning_rate": 1e-3, "max_train_steps": 100,
        "lr_warmup_steps": 25,
    },
}  # fmt: skip


def candidate_settings(name: str, steps: int) -> dict:
    """train_realfill.py's settings for a candidate: COMMON, `steps` unless it names its own."""
    return {**COMMON, "max_train_steps": steps, **CANDIDATES[name]}


def within_budget(settings: dict, budget: int | None) -> bool:
    """Whether a candidate trains on at most `budget` images (steps x batch); None: any."""
    return budget is None or settings["max_train_steps"] * settings["train_batch_size"] <= budget


STRENGTHS = (0.4, 0.6, 0.8)  # --strength candidates for geometry-guided sampling
VALIDATION_PHOTO = ("motorcycle_left", "motorcycle_left.png")


def validation_specs():
    """Two scenes from the validation photo: an outpainting and an inpainting one."""
    import random

    import make_example_scenes as mes

    rng = random.Random(7)

    def refs(*views):
        return tuple(mes.jitter(rng, v, angle=3.0, tilt=0.1) for v in views)

    return [
        mes.SceneSpec(
            101,
            VALIDATION_PHOTO[0],
            target=mes.View(center=(0.5, 0.5), width=420, size=(256, 172)),
            references=refs(
                mes.View(center=(0.48, 0.52), width=520, size=(256, 172), file="jpg"),
                mes.View(center=(0.55, 0.48), width=300, size=(192, 256), angle=-3.0),
                mes.View(center=(0.45, 0.5), width=480, size=(256, 192), angle=2.0, file="jpg"),
            ),
            mask=mes.BorderMask((0.15, 0.12, 0.15, 0.12)),
            summary="validation: outpainting, border all round",
        ),
        mes.SceneSpec(
            102,
            VALIDATION_PHOTO[0],
            target=mes.View(center=(0.52, 0.5), width=380, size=(256, 172), tilt=(0.02, 0.0)),
            references=refs(
                mes.View(center=(0.5, 0.5), width=460, size=(256, 192), file="jpg"),
                mes.View(center=(0.56, 0.52), width=420, size=(256, 172)),
            ),
            mask=mes.BlobMask(((0.45, 0.55, 0.12, 0.18, 20.0), (0.7, 0.4, 0.08, 0.12, -10.0))),
            summary="validation: inpainting, two interior holes",
        ),
    ]


def render_scenes(folder: Path) -> list[Path]:
    """Write the validation scenes under `folder` (replaced if present); return their dirs."""
    import shutil

    import make_example_scenes as mes

    mes.PHOTOS.setdefault(
        VALIDATION_PHOTO[0],
        mes.Photo(*VALIDATION_PHOTO, "Middlebury stereo view", "scikit-image", "not stated"),
    )
    scenes = []
    for spec in validation_specs():
        scene_dir = folder / str(spec.number)
        if scene_dir.exists():
            shutil.rmtree(scene_dir)
        mes.write_scene(spec, scene_dir)
        scenes.append(scene_dir)
    return scenes


def run(cmd: list, log: Path, done: Path | None = None) -> float:
    """Run one project script from the repository root (scene_engine.run_script), its output
    to `log`; return its wall time, kept beside the log (a finished step of an earlier run, one
    whose `done` exists, is reused with the time it took then, so an interrupted measurement
    resumes; 0 where that time was not kept); stop on failure."""
    timing = log.with_suffix(".seconds")
    if done is not None and done.is_file():
        return float(timing.read_text()) if timing.is_file() else 0.0
    start = time.perf_counter()
    try:
        engine.run_script(cmd, log, cwd=ROOT)
    except engine.StageFailed as err:
        sys.exit(f"failed: {shlex.join(map(str, cmd))}\n{err}")
    seconds = time.perf_counter() - start
    with ru.atomic_path(timing) as tmp:
        tmp.write_text(f"{seconds:.1f}\n")
    return seconds


def mean_over(table: dict, name: str, scenes: list[Path], metric: str) -> float:
    return sum(table[(name, s.name)][metric] for s in scenes) / len(scenes)


def score(scene_dir: Path, results: Path, count: int = NUM_IMAGES) -> dict:
    """Mean masked PSNR / SSIM of the completions in `results` against the scene's gt."""
    import numpy as np

    from benchmark.psnr import masked_psnr
    from benchmark.ssim import masked_ssim

    scene = ru.load_scene(scene_dir)
    gt = np.asarray(scene.gt)
    images = [np.asarray(ru.load_image(results / f"{i}.png")) for i in range(count)]
    return {
        "PSNR": float(np.mean([masked_psnr(gt, im, scene.fill_mask) for im in images])),
        "SSIM": float(np.mean([masked_ssim(gt, im, scene.fill_mask) for im in images])),
    }


def simple_fills(scene_dir: Path) -> dict:
    import numpy as np

    import baselines
    from benchmark.psnr import masked_psnr

    scene = ru.load_scene(scene_dir)
    gt = np.asarray(scene.gt)
    return {
        name: masked_psnr(gt, np.asarray(fill(scene)), scene.fill_mask)
        for name, fill in (("mean", baselines.mean_fill), ("telea", baselines.telea_fill))
    }


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=ru.HelpFormatter)
    p.add_argument(
        "--base_model",
        type=Path,
        default=ru.TOY_MODEL,
        help="SD2-inpainting pipeline folder; the chosen recipe is written into it",
    )
    p.add_argument(
        "--max_train_steps", type=int, default=STEPS, help="training steps of every candidate"
    )
    p.add_argument(
        "--output_dir",
        type=Path,
        default=ROOT / "runs" / "recipe",
        help="work folder (scenes, models, completions, logs); a rerun reuses finished steps",
    )
    p.add_argument(
        "--max_train_images",
        type=int,
        default=None,
        help="choose only among candidates that train on at most this many images (steps x "
        "batch), e.g. to keep the demo short; the others are still measured",
    )
    p.add_argument("--no-write", action="store_true", help="do not write realfill_recipe.json")
    args = p.parse_args(argv)
    out = args.output_dir.resolve()
    scenes = render_scenes(out / "scenes")  # the same bytes each time: reuse stays valid
    table, seconds = {}, {}
    for name in CANDIDATES:
        settings = candidate_settings(name, args.max_train_steps)
        slug = "".join(c if c.isalnum() else "-" for c in name)
        for scene in scenes:
            model_dir = out / slug / f"{scene.name}-model"
            results = out / slug / f"{scene.name}-results"
            print(f"== {name} on validation scene {scene.name}", flush=True)
            train = run([
                "train_realfill.py", "--pretrained_model_name_or_path",
                args.base_model, "--train_data_dir", scene, "--output_dir", model_dir,
                "--resolution", RESOLUTION, "--report_to", "none", "--validation_steps", "0",
                "--checkpointing_steps", "0",
                *ru.recipe_flags(settings),
            ], out / "logs" / f"{slug}-{scene.name}-train.log",
               model_dir / ru.SETTINGS_FILE)  # fmt: skip
            run([
                "infer.py", "--model_path", model_dir, "--output_dir", results,
                "--validation_image", scene / "target" / "target.png",
                "--validation_mask", scene / "target" / "mask.png",
                "--num_images", NUM_IMAGES, "--resolution", RESOLUTION,
                *ru.recipe_flags(INFER),
            ], out / "logs" / f"{slug}-{scene.name}-infer.log",
               results / "completions.json")  # fmt: skip
            table[(name, scene.name)] = score(scene, results)
            seconds[(name, scene.name)] = train
            print(f"   {table[(name, scene.name)]}", flush=True)
    fills = {scene.name: simple_fills(scene) for scene in scenes}
    limit = args.max_train_images
    eligible = [
        n for n in CANDIDATES if within_budget(candidate_settings(n, args.max_train_steps), limit)
    ]
    if not eligible:
        sys.exit(f"no candidate trains on at most {limit} images (--max_train_images)")
    best = max(
        eligible,
        key=lambda n: (mean_over(table, n, scenes, "PSNR"), mean_over(table, n, scenes, "SSIM")),
    )
    slug = "".join(c if c.isalnum() else "-" for c in best)
    guided = {}
    for scene in scenes:
        warp = out / "warp" / f"Custom-{scene.name}-results-warp"
        run(["warp_fill.py", "--scene_dir", scene, "--output_dir", warp],
            out / "logs" / f"warp-{scene.name}.log")  # fmt: skip
        guided[("warp fill alone", scene.name)] = score(scene, warp, count=1)
        for strength in STRENGTHS:
            results = out / slug / f"{scene.name}-results-prior-{strength}"
            print(f"== geometry-guided, strength {strength}, scene {scene.name}", flush=True)
            run([
                "infer.py", "--model_path", out / slug / f"{scene.name}-model",
                "--output_dir", results, "--validation_image", scene / "target" / "target.png",
                "--validation_mask", scene / "target" / "mask.png", "--num_images", NUM_IMAGES,
                "--resolution", RESOLUTION, *ru.recipe_flags(INFER),
                "--prior_image", warp / "0.png", "--strength", strength,
            ], out / "logs" / f"prior-{strength}-{scene.name}.log",
               results / "completions.json")  # fmt: skip
            guided[(f"strength {strength}", scene.name)] = score(scene, results)
    best_strength = max(STRENGTHS, key=lambda v: mean_over(guided, f"strength {v}", scenes, "PSNR"))

    def mean_over_scenes(name, metric):
        return mean_over(table, name, scenes, metric)

    lines = [
        "# Fine-tuning settings for the toy base, chosen on validation scenes",
        "",
        f"Command: `{shlex.join(['python', 'perf/bench_recipe.py', *sys.argv[1:]])}`",
        "",
        f"Validation scenes rendered from scikit-image's `{VALIDATION_PHOTO[1]}` (used by no "
        f"example scene and not by the toy model's training); {args.max_train_steps} steps "
        f"and batch {COMMON['train_batch_size']} unless named, at {RESOLUTION} px; "
        f"{NUM_IMAGES} completions, DPM-Solver++ 25; masked PSNR (dB) / SSIM inside the "
        "hole, mean over the completions.",
        "",
        *(
            [
                f"Only settings that train on at most {limit} images (steps x batch) may be "
                "chosen (--max_train_images).",
                "",
            ]
            if limit is not None
            else []
        ),
        "| setting | "
        + " | ".join(f"scene {s.name}" for s in scenes)
        + " | mean | train s |"
        + (" eligible |" if limit is not None else ""),
        "|---|" + "---|" * (len(scenes) + 2 + (limit is not None)),
    ]
    for name in CANDIDATES:
        cells = [
            f"{table[(name, s.name)]['PSNR']:.2f} / {table[(name, s.name)]['SSIM']:.3f}"
            for s in scenes
        ]
        times = [seconds[(name, s.name)] for s in scenes]
        train_s = f"{sum(times) / len(times):.0f}" if all(times) else "reused"
        lines.append(
            f"| {name} | "
            + " | ".join(cells)
            + f" | {mean_over_scenes(name, 'PSNR'):.2f} / {mean_over_scenes(name, 'SSIM'):.3f}"
            + f" | {train_s} |"
            + (f" {'yes' if name in eligible else 'no'} |" if limit is not None else "")
        )
    lines.append(
        "| mean-colour fill / Telea (PSNR) | "
        + " | ".join(f"{fills[s.name]['mean']:.2f} / {fills[s.name]['telea']:.2f}" for s in scenes)
        + " | | |"
        + (" |" if limit is not None else "")
    )
    lines += [
        "",
        f"Chosen: **{best}**"
        + (" (not written to the model's folder: --no-write)." if args.no_write else "."),
        "",
        "## Geometry-guided sampling with the chosen setting (infer.py --prior_image)",
        "",
        "The prior is warp_fill.py's completion of the scene; --strength is how far it is "
        "noised before sampling (1 = pure noise).",
        "",
        "| start | " + " | ".join(f"scene {s.name}" for s in scenes) + " | mean |",
        "|---|" + "---|" * (len(scenes) + 1),
    ]
    for row in ["warp fill alone", *(f"strength {v}" for v in STRENGTHS)]:
        cells = [
            f"{guided[(row, s.name)]['PSNR']:.2f} / {guided[(row, s.name)]['SSIM']:.3f}"
            for s in scenes
        ]
        lines.append(
            f"| {row} | "
            + " | ".join(cells)
            + f" | {mean_over(guided, row, scenes, 'PSNR'):.2f}"
            + f" / {mean_over(guided, row, scenes, 'SSIM'):.3f} |"
        )
    lines += ["", f"Chosen --strength: **{best_strength}**."]
    md = ROOT / "perf" / "results" / "recipe.md"
    ru.write_results(
        md,
        {
            "command": sys.argv,
            "scores": {f"{n}|{s}": v for (n, s), v in table.items()},
            "train_seconds": {f"{n}|{s}": v for (n, s), v in seconds.items()},
            "simple_fills_psnr": fills,
            "max_train_images": limit,
            "eligible": eligible,
            "chosen": best,
            "geometry_guided": {f"{n}|{s}": v for (n, s), v in guided.items()},
            "chosen_strength": best_strength,
        },
        lines,
    )
    print("\n".join(lines))
    if not args.no_write:
        recipe = {
            "about": "RealFill fine-tuning settings recommended for this base model, chosen by "
            "perf/bench_recipe.py on validation scenes (see perf/results/recipe.md); "
            "train_realfill.py's own defaults are the paper's recipe for SD2",
            "train": {"resolution": RESOLUTION, **candidate_settings(best, args.max_train_steps)},
            "infer": {**INFER, "prior_strength": best_strength},
        }
        ru.atomic_write_json(recipe, args.base_model / ru.RECIPE_FILE)
        print(f"wrote {args.base_model / ru.RECIPE_FILE}")


if __name__ == "__main__":
    main()
