"""Where geometry-guided RealFill could gain over the warp fill on a scene, and what stops it.

Fine-tunes the base on the scene with its recipe (as the quality gate does), runs the warp fill,
then infer.py started from the warp fill (the gate's geometry-guided settings) without the
per-pixel weighing, and weighs those completions with geometry.fuse in this process (what
`--prior_uncertainty` does). Inside the hole, at the ground truth's size, it measures:
- how the warp fill's squared error is spread over the hole (the share its worst 20% of pixels
  carry);
- on those pixels and on the rest: the warp fill's error, the completions' error, and the
  signals a test-time weighing can see (the completions' spread, how far they moved from the
  warp fill, the warp fill's own uncertainty);
- masked PSNR of the warp fill, the completions, their weighed version (geometry-guided
  RealFill), and an oracle that knows the truth: the warp fill with the completions' mean on
  the warp fill's worst 20% of pixels, i.e. what a weighing would reach if a signal known at
  test time told those pixels apart (the signal rows show how well each one does).

    python perf/bench_geo_limit.py                       # data/Custom/4 (parallax), ~5 min
    python perf/bench_geo_limit.py --scene data/Custom/1
Results: perf/results/geo_limit_<bench>-<n>.md and .json.
"""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "perf"))

from bench_quality import run  # noqa: E402

import infer  # noqa: E402
import realfill_utils as ru  # noqa: E402
from benchmark.psnr import masked_psnr  # noqa: E402

WORST_SHARE = 0.2  # the warp fill's worst pixels, as a share of the hole


def rms(values: np.ndarray, where: np.ndarray) -> float:
    return float(np.sqrt(values[where].mean()))


def analyse(scene_dir: Path, warp: Path, results: Path, num_images: int) -> dict:
    """The measurements above, from the files the runs wrote."""
    import cv2

    import geometry

    scene = ru.load_scene(scene_dir, require_references=False)
    hole = scene.fill_mask
    gt = np.asarray(scene.gt.convert("RGB"))
    size = gt.shape[1], gt.shape[0]
    at_gt = lambda image: np.asarray(image.convert("RGB").resize(size))  # noqa: E731
    prior = at_gt(ru.load_image(warp / "0.png"))
    uncertainty = geometry.read_uncertainty(ru.load_image(warp / "uncertainty.png"))
    completions = [at_gt(ru.load_image(results / f"{i}.png")) for i in range(num_images)]
    weighed, weight = geometry.fuse(completions, prior, uncertainty, hole)
    stack = np.stack(completions).astype(np.float64)
    mean_image = stack.mean(axis=0)

    def error2(image: np.ndarray) -> np.ndarray:  # per-pixel squared error, channel mean
        return ((image.astype(np.float64) - gt) ** 2).mean(axis=-1)

    def patch_mean(values: np.ndarray) -> np.ndarray:  # the 7-px patches geometry.fuse uses
        box = (geometry.SPREAD_PATCH, geometry.SPREAD_PATCH)
        return cv2.boxFilter(values.astype(np.float32), -1, box).astype(np.float64)

    warp_error2 = error2(prior)
    ys, xs = np.nonzero(hole)
    order = np.argsort(-warp_error2[ys, xs], kind="stable")[: round(WORST_SHARE * len(ys))]
    worst = np.zeros_like(hole)
    worst[ys[order], xs[order]] = True  # exactly that share, ties or not
    rest = hole & ~worst
    completion_error2 = np.mean([error2(c) for c in completions], axis=0)
    signals = {
        "spread across the completions": patch_mean(stack.var(axis=0, ddof=1).mean(axis=-1)),
        "completions' distance from the warp fill": patch_mean(
            ((stack - prior) ** 2).mean(axis=(0, -1))
        ),
        "warp fill's uncertainty": np.where(np.isfinite(uncertainty), uncertainty, 0.0) ** 2,
    }
    oracle = prior.astype(np.float64).copy()
    oracle[worst] = mean_image[worst]
    psnr = lambda image: masked_psnr(gt, np.rint(image).astype(np.uint8), hole)  # noqa: E731
    return {
        "hole_pixels": int(hole.sum()),
        "worst_pixels": int(worst.sum()),
        "worst_share_of_warp_error": float(warp_error2[worst].sum() / warp_error2[hole].sum()),
        "rms_error": {
            "warp fill": [rms(warp_error2, worst), rms(warp_error2, rest)],
            "completions": [rms(completion_error2, worst), rms(completion_error2, rest)],
            "completions' mean": [rms(error2(mean_image), worst), rms(error2(mean_image), rest)],
        },
        "rms_signal": {name: [rms(v, worst), rms(v, rest)] for name, v in signals.items()},
        "psnr": {
            "warp fill": psnr(prior),
            "completions started from the warp fill, not weighed": float(
                np.mean([psnr(c) for c in completions])
            ),
            "the same, weighed (geometry-guided RealFill)": float(
                np.mean([psnr(c) for c in weighed])
            ),
            "oracle: warp fill, the completions' mean on its worst 20%": psnr(oracle),
        },
        "prior_weight_in_hole": float(weight[hole].mean()),
    }


def report(name: str, command: str, found: dict, strength: float) -> list[str]:
    worst = f"worst {WORST_SHARE:.0%}"
    lines = [
        f"# Geometry-guided RealFill against the warp fill on {name}: where the gain could be",
        "",
        f"Command: `{command}` (base: the toy model with its recipe; the completions start from "
        f"the warp fill at strength {strength}, DDPM 200; inside the hole at the ground truth's "
        "size).",
        "",
        "| masked PSNR (dB) | |",
        "|---|---|",
        *(f"| {k} | {v:.2f} |" for k, v in found["psnr"].items()),
        "",
        f"The warp fill's {worst} of the hole's pixels carry "
        f"{found['worst_share_of_warp_error']:.0%} of its squared error.",
        "",
        f"| root-mean-square, grey levels | on the warp fill's {worst} | on the rest |",
        "|---|---|---|",
        *(f"| error of the {k} | {a:.1f} | {b:.1f} |" for k, (a, b) in found["rms_error"].items()),
        *(f"| signal: {k} | {a:.1f} | {b:.1f} |" for k, (a, b) in found["rms_signal"].items()),
        "",
        f"Mean weight of the warp fill inside the hole after weighing: "
        f"{found['prior_weight_in_hole']:.2f}. Machine: {platform.machine()}, "
        f"{platform.python_version()}.",
    ]
    return lines


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=ru.HelpFormatter)
    p.add_argument("--scene", type=Path, default=ROOT / "data" / "Custom" / "4")
    p.add_argument("--base_model", type=Path, default=ru.TOY_MODEL)
    p.add_argument("--num_images", type=int, default=16)
    p.add_argument(
        "--output_dir",
        type=Path,
        default=ROOT / "runs" / "geo_limit",
        help="work folder (model, warp fill, completions, logs); a rerun reuses finished steps",
    )
    args = p.parse_args(argv)
    scene = args.scene.resolve()
    ru.load_scene(scene, require_references=True)  # bad input: a clear error before any run
    if ru.load_scene(scene).gt is None:
        sys.exit(f"error: {scene / 'target' / 'gt.png'} not found: the analysis needs the truth")
    recipe = ru.model_recipe(args.base_model)
    train = dict(recipe.get("train", {}))
    resolution = train.get("resolution", ru.RESOLUTION)
    strength = recipe.get("infer", {}).get("prior_strength", infer.PRIOR_STRENGTH)
    name = f"{scene.parent.name}-{scene.name}"
    out = args.output_dir.resolve()
    logs = out / "logs"
    model, warp = out / "model", out / f"{name}-results-warp"
    results = out / f"{name}-results-geo-unweighed"
    print(f"== {name}: fine-tune, warp fill, completions from the warp fill ({out})", flush=True)
    run([
        "train_realfill.py", "--pretrained_model_name_or_path", args.base_model,
        "--train_data_dir", scene, "--output_dir", model,
        "--report_to", "none", "--validation_steps", "0", "--resume_from_checkpoint", "latest",
        *ru.recipe_flags(train),
    ], logs / "train.log", done=model / ru.SETTINGS_FILE)  # fmt: skip
    run(["warp_fill.py", "--scene_dir", scene, "--output_dir", warp], logs / "warp.log",
        done=warp / "warp_fill.json")  # fmt: skip
    run([
        "infer.py", "--model_path", model, "--output_dir", results,
        "--validation_image", scene / "target" / "target.png",
        "--validation_mask", scene / "target" / "mask.png",
        "--resolution", resolution, "--num_images", args.num_images,
        "--scheduler", "ddpm", "--num_inference_steps", 200,
        "--prior_image", warp / "0.png", "--strength", strength,
    ], logs / "infer.log", done=results / infer.COMPLETIONS_FILE)  # fmt: skip
    found = analyse(scene, warp, results, args.num_images)
    command = "python perf/bench_geo_limit.py" + (
        "" if scene == (ROOT / "data" / "Custom" / "4").resolve() else f" --scene {args.scene}"
    )
    lines = report(name, command, found, strength)
    stem = ROOT / "perf" / "results" / f"geo_limit_{name}"
    record = found | {"command": command, "strength": strength}
    ru.write_results(stem.with_suffix(".md"), record, lines)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
