"""Measure the warp fill (geometry.py) on every example scene against simple fills.

Masked PSNR and SSIM inside the hole at the ground truth's size (the benchmark's own
functions), per scene, for: the mean colour of the known region; OpenCV Telea inpainting
(radius 5); a single homography from the best-aligned reference pasted into the hole, raw and
with the per-channel colour fit; and the warp fill with one plane per reference and with
several (the default). Seconds per scene for the warp fill. Writes perf/results/warp_fill.md
and .json, and the table into docs/geometry.md between its markers. Example:
    python perf/bench_warp.py
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import realfill_utils as ru  # noqa: E402
from benchmark.psnr import masked_psnr  # noqa: E402
from benchmark.ssim import masked_ssim  # noqa: E402
from realfill_utils import atomic_path, composite, load_scene  # noqa: E402

MARK_BEGIN = "<!-- warp_fill table: written by perf/bench_warp.py -->"
MARK_END = "<!-- end of warp_fill table -->"
COMMAND = "python perf/bench_warp.py"


def mean_colour(scene) -> Image.Image:
    target = np.asarray(scene.target).copy()
    target[scene.fill_mask] = target[~scene.fill_mask].mean(axis=0).round().astype(np.uint8)
    return Image.fromarray(target)


def telea(scene) -> Image.Image:
    import cv2

    mask = scene.fill_mask.astype(np.uint8) * 255
    return Image.fromarray(cv2.inpaint(np.asarray(scene.target), mask, 5, cv2.INPAINT_TELEA))


def single_homography(scene, matcher, colour_fit: bool) -> Image.Image:
    """The best-aligned reference (most inliers) through one homography, pasted into the hole;
    pixels it does not cover inpainted (Telea), composited as the warp fill is."""
    import cv2

    import geometry

    target_px = np.asarray(scene.target)
    target_match = geometry.match_image(scene.target, "target", matcher.max_side, matcher.multiple)
    best = None
    for path, reference in zip(scene.reference_paths, scene.references, strict=True):
        alignment = geometry.align(
            matcher, reference, path.name, target_match, scene.fill_mask, max_homographies=1
        )
        if not alignment.error and (best is None or alignment.planes[0].inliers > best[0]):
            best = (alignment.planes[0].inliers, reference, alignment)
    filled = target_px.copy()
    uncovered = scene.fill_mask
    if best is not None:
        _, reference, alignment = best
        ((image, valid),) = geometry.warp_planes(
            np.asarray(reference), alignment, scene.target.size
        )
        if colour_fit:
            fits = geometry.fit_colour(image, target_px, valid & ~scene.fill_mask)
            image = geometry.apply_colour(image, fits)
        paste = scene.fill_mask & valid
        filled[paste] = np.clip(np.rint(image[paste]), 0, 255).astype(np.uint8)
        uncovered = scene.fill_mask & ~valid
    if uncovered.any():
        filled = cv2.inpaint(filled, uncovered.astype(np.uint8) * 255, 5, cv2.INPAINT_TELEA)
    return composite(Image.fromarray(filled), scene.target, scene.fill_mask, 0)


def score(scene, image: Image.Image) -> tuple[float, float]:
    gt, out = np.asarray(scene.gt), np.asarray(image)
    known_from_gt = np.where(scene.fill_mask[..., None], out, gt)
    return masked_psnr(gt, out, scene.fill_mask), masked_ssim(gt, known_from_gt, scene.fill_mask)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=ru.HelpFormatter)
    parser.add_argument(
        "--data_dir", type=Path, default=ROOT / "data" / "Custom", help="example scenes"
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=ROOT / "perf" / "results" / "warp_fill",
        help="results stem: <output>.md and <output>.json",
    )
    parser.add_argument(
        "--docs", type=Path, default=ROOT / "docs" / "geometry.md", help="doc whose table is redone"
    )
    args = parser.parse_args(argv)
    if not (args.data_dir.parent / "scenes.json").is_file():
        parser.error(f"--data_dir {args.data_dir}: not the Custom/ folder of the example scenes")

    import cv2

    import geometry
    from loftr_ranking import make_matcher

    cv2.setNumThreads(1)
    matcher = make_matcher("sift")
    manifest = json.loads((args.data_dir.parent / "scenes.json").read_text())
    notes = {s["scene"].split("/")[1]: s for s in manifest["scenes"]}
    methods = {
        "mean colour of the known region": lambda s: mean_colour(s),
        "OpenCV Telea, radius 5": lambda s: telea(s),
        "single homography, best reference, pasted": lambda s: single_homography(s, matcher, False),
        "the same + per-channel colour fit": lambda s: single_homography(s, matcher, True),
        "warp fill, 1 plane per reference": lambda s: (
            geometry.warp_fill(s.target, s.fill_mask, refs(s), matcher, max_homographies=1).image
        ),
        "warp fill (default: up to 3 planes)": lambda s: (
            geometry.warp_fill(s.target, s.fill_mask, refs(s), matcher).image
        ),
    }
    scenes = sorted((p for p in args.data_dir.iterdir() if p.is_dir()), key=lambda p: int(p.name))
    rows, seconds, info = {m: {} for m in methods}, {}, {}
    for scene_dir in scenes:
        scene = load_scene(scene_dir)
        for name, method in methods.items():
            start = time.perf_counter()
            image = method(scene)
            elapsed = time.perf_counter() - start
            rows[name][scene_dir.name] = score(scene, image)
            if name.startswith("warp fill (default"):
                seconds[scene_dir.name] = elapsed
                result = geometry.warp_fill(scene.target, scene.fill_mask, refs(scene), matcher)
                info[scene_dir.name] = {
                    "planes": [len(a.planes) for a in result.alignments],
                    "inpainted": result.fallback_share,
                }
        print(f"Custom/{scene_dir.name} done", file=sys.stderr)

    names = [p.name for p in scenes]
    header = "| fill | " + " | ".join(f"Custom/{n}" for n in names) + " | mean |"
    lines = [
        "Masked PSNR (dB) / SSIM inside the hole at the ground truth's size. "
        f"Command: `{COMMAND}`.",
        "",
        header,
        "|---" * (len(names) + 2) + "|",
    ]
    for name, per_scene in rows.items():
        cells = [f"{per_scene[n][0]:.2f} / {per_scene[n][1]:.3f}" for n in names]
        psnr = np.mean([per_scene[n][0] for n in names])
        ssim = np.mean([per_scene[n][1] for n in names])
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {psnr:.2f} / {ssim:.3f} |")
    lines += [
        "",
        "| scene | what it tests | planes per reference | hole inpainted | warp fill s |",
        "|---|---|---|---|---|",
    ]
    for n in names:
        kind = (
            "parallax"
            if "layer" in notes[f"{n}"]
            else (
                "hole seen by no reference" if notes[n]["hole_seen_by_references"] == 0 else "flat"
            )
        )
        planes = "+".join(str(p) for p in info[n]["planes"])
        lines.append(
            f"| Custom/{n} | {kind} | {planes} | {info[n]['inpainted']:.0%} | {seconds[n]:.2f} |"
        )
    lines += [
        "",
        f"Machine: {platform.machine()}, {platform.python_version()}, OpenCV {cv2.__version__}, "
        "one OpenCV thread; SIFT matcher (weight-free). Seconds: the whole warp fill of a scene "
        "(matching, fitting, warping, fusion), in-process.",
    ]
    table = "\n".join(lines) + "\n"

    args.output.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(args.output.with_suffix(".md")) as tmp:
        tmp.write_text("# Warp fill on the example scenes\n\n" + table)
    record = {
        "command": COMMAND,
        "scores": {
            m: {n: {"psnr": v[0], "ssim": v[1]} for n, v in r.items()} for m, r in rows.items()
        },
        "seconds": seconds,
        "scenes": info,
    }
    with atomic_path(args.output.with_suffix(".json")) as tmp:
        tmp.write_text(json.dumps(record, indent=2) + "\n")
    ru.replace_between_markers(args.docs, MARK_BEGIN, MARK_END, table)
    print(table)
    return 0


def refs(scene) -> list[tuple[str, Image.Image]]:
    return [(p.name, im) for p, im in zip(scene.reference_paths, scene.references, strict=True)]


if __name__ == "__main__":
    sys.exit(main())
