"""Fill a scene's hole from its references by geometry alone: the warp fill (geometry.py).

Each reference is matched with the target's known region, mapped into the target by one or
more RANSAC homographies, colour-matched, and the warps are fused per pixel; what no reference
covers is inpainted (OpenCV Telea). The result is composited over the target with the usual
feathering, so the known region stays the target's own. Writes into --output_dir:
  0.png               the completion (one: the method is deterministic)
  uncertainty.png     per pixel, the fill's expected error in grey levels (how far the other
                      references disagree with it; 255 = no reference covers the pixel): what
                      infer.py --prior_uncertainty weighs the fill by against the diffusion
  warp_fill.json      per reference: matches, inliers, reprojection error, homographies, or
                      why it could not be aligned; how much of the hole was inpainted instead
Name the folder <scene>-results-warp and benchmarks.py reads it as its own variant; give it
--num_images 1 (it expects 16 completions per folder otherwise). Example:
    python warp_fill.py --scene_dir data/Custom/4 --output_dir results/Custom-4-results-warp
    python warp_fill.py --scene_dir RealBench/23 --output_dir results/RealBench-23-results-warp \\
        --matcher loftr --loftr_weights ~/weights/loftr_outdoor.ckpt
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import realfill_utils as ru
from realfill_utils import (
    FEATHER_RADIUS,
    SceneError,
    atomic_save_image,
    atomic_write_json,
    load_scene,
)

SCHEMA_VERSION = 1  # of warp_fill.json
REPORT_FILE = "warp_fill.json"
SCRIPT = "warp_fill.py"
MATCHERS = ("sift", "loftr")  # sift first: it needs no weights


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=ru.HelpFormatter)
    parser.add_argument("--scene_dir", type=Path, required=True, help="RealBench-layout scene")
    parser.add_argument(
        "--output_dir",
        type=Path,
        required=True,
        help="results folder, e.g. results/Custom-4-results-warp; never inside the scene",
    )
    parser.add_argument(
        "--matcher",
        choices=MATCHERS,
        default="sift",
        help="correspondences: sift (weight-free) or loftr (needs weights)",
    )
    parser.add_argument(
        "--loftr_weights",
        help="local LoFTR checkpoint for --matcher loftr (else $REALFILL_LOFTR_WEIGHTS, "
        "kornia's cache)",
    )
    parser.add_argument(
        "--max_homographies",
        type=int,
        default=3,
        help="planes fitted per reference (1 = a single homography each)",
    )
    parser.add_argument(
        "--feather_radius",
        type=float,
        default=FEATHER_RADIUS,
        help="px of the known region around the hole blended with the fill",
    )
    return parser.parse_args(argv)


def claim_output(output_dir: Path, scene_dir: Path) -> None:
    """Refuse a folder overlapping the scene, or holding files this script did not write (see
    realfill_utils.claim_output_dir), then record the outputs. A folder written before outputs
    were recorded (only a warp fill's own three files) is adopted."""
    from geometry import UNCERTAINTY_FILE

    # benchmarks.py ranks the fill beside it: a later run finds that file and may keep it
    entries = ["0.png", UNCERTAINTY_FILE, REPORT_FILE, "loftr_ranking_scores.json"]
    inputs = {"the scene": scene_dir}
    ru.adopt_earlier_output(output_dir, SCRIPT, REPORT_FILE, entries.__contains__, inputs)
    ru.claim_output_dir(output_dir, SCRIPT, entries, inputs)


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        if args.max_homographies < 1:
            raise SceneError(f"--max_homographies {args.max_homographies}: use 1 or more")
        if args.feather_radius < 0:
            raise SceneError(f"--feather_radius {args.feather_radius}: use 0 or more px")
        scene = load_scene(args.scene_dir)
        claim_output(args.output_dir, args.scene_dir)

        import numpy as np

        # OpenCV and SciPy: only once the input is known good
        from geometry import UNCERTAINTY_FILE, uncertainty_image, warp_fill
        from loftr_ranking import make_matcher

        matcher = make_matcher(args.matcher, weights=args.loftr_weights)
        start = time.perf_counter()
        references = [
            (p.name, image)
            for p, image in zip(scene.reference_paths, scene.references, strict=True)
        ]
        result = warp_fill(
            scene.target,
            scene.fill_mask,
            references,
            matcher,
            max_homographies=args.max_homographies,
            feather_radius=args.feather_radius,
        )
        seconds = time.perf_counter() - start
    except SceneError as err:
        print(f"error: {err}", file=sys.stderr)
        return ru.EXIT_INPUT
    except KeyboardInterrupt:
        print("interrupted; nothing was written", file=sys.stderr)
        return ru.EXIT_INTERRUPTED

    atomic_save_image(result.image, args.output_dir / "0.png")
    atomic_save_image(uncertainty_image(result.uncertainty), args.output_dir / UNCERTAINTY_FILE)
    expected = result.uncertainty[scene.fill_mask & result.covered]
    report = {
        "schema_version": SCHEMA_VERSION,
        "method": "warp_fill",
        "scene_dir": str(args.scene_dir.resolve()),
        "settings": matcher.settings()
        | {"max_homographies": args.max_homographies, "feather_radius": args.feather_radius},
        "hole_pixels": int(scene.fill_mask.sum()),
        "hole_covered_by_references": round(1.0 - result.fallback_share, 4),
        "hole_inpainted": round(result.fallback_share, 4),
        "uncertainty_file": UNCERTAINTY_FILE,
        "hole_median_uncertainty": round(float(np.median(expected)), 2) if expected.size else None,
        "occlusion_order": result.occlusion,
        "references": result.references,
        "seconds": round(seconds, 3),
    }
    atomic_write_json(report, args.output_dir / REPORT_FILE)
    aligned = [r for r in result.references if not r["error"]]
    print(
        f"{len(aligned)} of {len(references)} references aligned (homographies: "
        f"{'+'.join(str(len(r['homographies'])) for r in aligned) or 'none'}); hole "
        f"{1.0 - result.fallback_share:.0%} from the references, "
        f"{result.fallback_share:.0%} inpainted (Telea); {seconds:.2f} s; wrote {args.output_dir}"
    )
    for r in result.references:
        if r["error"]:
            print(f"  {r['reference']}: not aligned: {r['error']}")
    return ru.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
