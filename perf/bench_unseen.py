"""The demo on scenes the project has never seen: does fine-tuning still beat the un-tuned base?

The example scenes in data/Custom were fixed when the toy model and its recipe were made; a
result that holds only there would be tuned to them. This script draws new scenes from a seed,
with make_example_scenes.py's renderer and the same licensed photos but new views, new holes
(interior blobs or missing borders, of random size and place) and 2-3 new references each, then
runs `python demo.py --scene` on each and tabulates, inside the hole, the un-tuned base and
RealFill (all completions and the best 25% by the ranking) beside the mean-colour fill and
OpenCV Telea.

    python perf/bench_unseen.py                  # 3 scenes, about 10 minutes on 2 CPU cores
    python perf/bench_unseen.py --seed 7 --count 5 --name unseen_seed7
Results: perf/results/<name>.md and .json (default name: unseen_scenes).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import make_example_scenes as mes  # noqa: E402
import realfill_utils as ru  # noqa: E402
from benchmark.suite import seed_selection  # noqa: E402

SIZES = [(256, 171), (256, 192), (256, 256), (192, 256)]  # (width, height) of a view
DRAW_FILE = "drawn.json"  # in --output_dir: the seed and count its scenes were drawn with
DEMO_TIMEOUT = 3600  # s: a demo that takes longer than this has hung


def fits(view: mes.View, photo_size: tuple[int, int]) -> bool:
    h = mes.view_homography(view, photo_size)
    return mes.inside(mes.view_corners(h, view.size), photo_size)


def random_mask(rng: random.Random) -> mes.BlobMask | mes.BorderMask:
    """An interior hole of one or two ellipses, or one or two missing borders."""
    if rng.random() < 0.5:
        return mes.BlobMask(
            tuple(
                (
                    round(rng.uniform(0.3, 0.7), 3),
                    round(rng.uniform(0.3, 0.7), 3),
                    round(rng.uniform(0.08, 0.18), 3),
                    round(rng.uniform(0.08, 0.2), 3),
                    round(rng.uniform(-45, 45), 1),
                )
                for _ in range(rng.choice((1, 2)))
            )
        )
    sides = rng.sample(range(4), rng.choice((1, 2)))
    return mes.BorderMask(
        tuple(round(rng.uniform(0.15, 0.3), 3) if i in sides else 0.0 for i in range(4))
    )


def random_spec(rng: random.Random, number: int) -> mes.SceneSpec:
    """A scene of one photo: a target view and 2-3 references near it (zoomed by 0.8-1.3,
    shifted by up to 8% of the photo, then jittered in light, rotation and perspective as the
    example scenes are), every view inside the photo."""
    photo = rng.choice(sorted(mes.PHOTOS))
    pixels = mes.load_photo(photo)
    photo_size = (pixels.shape[1], pixels.shape[0])

    def widest(size: tuple[int, int]) -> float:  # photo pixels a view of `size` can span
        return min(photo_size[0], photo_size[1] * size[0] / size[1])

    for _ in range(1000):
        size = rng.choice(SIZES)
        target = mes.View(
            center=(round(rng.uniform(0.4, 0.6), 3), round(rng.uniform(0.4, 0.6), 3)),
            width=round(rng.uniform(0.45, 0.75) * widest(size), 1),
            size=size,
        )
        references = []
        for _ in range(rng.choice((2, 3))):
            ref_size = rng.choice(SIZES)
            nominal = mes.View(
                center=tuple(round(c + rng.uniform(-0.08, 0.08), 3) for c in target.center),
                width=round(min(target.width * rng.uniform(0.8, 1.3), 0.9 * widest(ref_size)), 1),
                size=ref_size,
                file=rng.choice(("png", "jpg")),
            )
            references.append(mes.jitter(rng, nominal, angle=3.0, tilt=0.1))
        if all(fits(v, photo_size) for v in (target, *references)):
            mask = random_mask(rng)
            return mes.SceneSpec(
                number, photo, target, tuple(references), mask, f"drawn: {mask.describe()}"
            )
    raise RuntimeError(f"no view of {photo} fits after 1000 draws")


def simple_fills(scene_dir: Path) -> dict:
    """PSNR and SSIM of the mean-colour fill and Telea, scored as the benchmark scores."""
    import numpy as np

    import baselines
    from benchmark.psnr import masked_psnr
    from benchmark.ssim import masked_ssim

    scene = ru.load_scene(scene_dir)
    gt = np.asarray(scene.gt)
    out = {}
    for name, fill in (("mean", baselines.mean_fill), ("telea", baselines.telea_fill)):
        result = np.asarray(fill(scene))
        out[name] = {
            "PSNR": masked_psnr(gt, result, scene.fill_mask),
            "SSIM": masked_ssim(gt, result, scene.fill_mask),
        }
    return out


def run_scene(scene_dir: Path, out: Path, log: Path) -> dict:
    """demo.py on the scene; its scores by method, and its wall time."""
    start = time.perf_counter()
    cmd = [sys.executable, "demo.py", "--scene", str(scene_dir), "--output_dir", str(out)]
    with log.open("w") as stream:
        try:
            done = subprocess.run(
                cmd, cwd=ROOT, stdout=stream, stderr=subprocess.STDOUT, timeout=DEMO_TIMEOUT
            )
        except subprocess.TimeoutExpired:
            sys.exit(f"demo.py on {scene_dir} ran over {DEMO_TIMEOUT} s and was stopped; see {log}")
    seconds = time.perf_counter() - start
    if done.returncode:
        sys.exit(f"demo.py on {scene_dir} failed ({done.returncode}); see {log}")
    rows = json.loads((out / "benchmark_report_scores.json").read_text())["scores"]
    scores = {}
    for variant, key in (("untuned", "untuned"), ("base", "realfill")):
        mine = [r for r in rows if r["variant"] == variant and r["PSNR"] is not None]
        if not mine or any(r["rank"] is None for r in mine):
            sys.exit(f"{out}: no ranked scores for the {key} completions; see {log}")
        order = [r["image"] for r in sorted(mine, key=lambda r: r["rank"])]
        scores[key] = {}
        for m in ("PSNR", "SSIM"):
            kept = seed_selection({r["image"]: r[m] for r in mine}, order, (0.0, 0.75))
            scores[key][m] = {"all": kept[0.0], "best_25": kept[0.75]}
    return {"seconds": seconds, "completions": len(mine), "scores": scores}


def mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


def report(args, entries: list[dict], results: list[dict]) -> list[str]:
    def cell(d: dict) -> str:
        return f"{d['PSNR']:.2f} / {d['SSIM']:.3f}"

    lines = [
        "# RealFill on scenes drawn anew (never seen by the project)",
        "",
        f"Command: `{' '.join(['python perf/bench_unseen.py', *sys.argv[1:]])}`",
        "",
        f"{len(entries)} scenes drawn with seed {args.seed} (make_example_scenes.py's renderer "
        "and photos, new views, holes and references); on each, `python demo.py --scene` (the "
        f"defaults: the toy base and its recipe, {results[0]['completions']} completions, SIFT "
        "ranking). Masked PSNR (dB) / SSIM inside the hole against the ground truth; best 25%: "
        "the top quarter by the ranking.",
        "",
        "| scene | photo | hole | fill | seen by refs | mean colour | Telea | un-tuned | "
        "RealFill | RealFill best 25% | demo s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for entry, result in zip(entries, results, strict=True):
        realfill = result["scores"]["realfill"]
        lines.append(
            f"| {entry['scene']} | {entry['photo']} | {entry['mask']} | "
            f"{entry['hole_fraction']:.0%} | {entry['hole_seen_by_references']:.0%} | "
            f"{cell(result['fills']['mean'])} | {cell(result['fills']['telea'])} | "
            f"{cell({m: v['all'] for m, v in result['scores']['untuned'].items()})} | "
            f"{cell({m: v['all'] for m, v in realfill.items()})} | "
            f"{cell({m: v['best_25'] for m, v in realfill.items()})} | "
            f"{result['seconds']:.0f} |"
        )

    def avg(path) -> float:
        return mean(path(r) for r in results)

    gain = avg(lambda r: r["scores"]["realfill"]["PSNR"]["all"]) - avg(
        lambda r: r["scores"]["untuned"]["PSNR"]["all"]
    )
    ssim_gain = avg(lambda r: r["scores"]["realfill"]["SSIM"]["all"]) - avg(
        lambda r: r["scores"]["untuned"]["SSIM"]["all"]
    )
    selection_gain = avg(lambda r: r["scores"]["realfill"]["PSNR"]["best_25"]) - avg(
        lambda r: r["scores"]["realfill"]["PSNR"]["all"]
    )
    beats = [
        all(
            r["scores"]["realfill"][m]["all"] > r["fills"][f][m]
            for f in ("mean", "telea")
            for m in ("PSNR", "SSIM")
        )
        for r in results
    ]
    lines += [
        "",
        f"- RealFill minus the un-tuned base, mean over the scenes: **{gain:+.2f} dB** PSNR, "
        f"{ssim_gain:+.3f} SSIM.",
        f"- RealFill beats the mean-colour fill and Telea in both PSNR and SSIM on "
        f"{sum(beats)} of {len(beats)} scenes.",
        f"- Seed selection, RealFill's best 25% minus all kept: {selection_gain:+.2f} dB.",
        f"- Demo wall time: {min(r['seconds'] for r in results):.0f}-"
        f"{max(r['seconds'] for r in results):.0f} s per scene (goal for `make demo`: under "
        "3 minutes).",
    ]
    return lines


def output_folder(args) -> Path:
    """--output_dir, new or empty, or one this script drew its scenes in with the same seed and
    count (a rerun then goes on where it stopped); anything else is refused."""
    out = (args.output_dir or ROOT / "runs" / args.name).resolve()
    drawn = {"seed": args.seed, "count": args.count}
    if out.is_dir() and (out / DRAW_FILE).is_file():
        if json.loads((out / DRAW_FILE).read_text()) != drawn:
            sys.exit(
                f"error: {out} holds scenes drawn with {(out / DRAW_FILE).read_text().strip()}, "
                f"not {json.dumps(drawn)}: give a new --output_dir"
            )
    elif out.exists() and (not out.is_dir() or any(out.iterdir())):
        sys.exit(f"error: {out} exists and is not empty: give a new --output_dir")
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=ru.HelpFormatter)
    p.add_argument("--seed", type=int, default=1, help="draws the scenes (2024 made data/Custom)")
    p.add_argument("--count", type=ru.positive_int, default=3, help="scenes to draw")
    p.add_argument(
        "--output_dir",
        type=Path,
        default=None,
        help="work folder: the scenes and each demo's output (default: runs/<name>); new, "
        "empty, or one this script drew in with the same --seed and --count (it goes on)",
    )
    p.add_argument("--name", default="unseen_scenes", help="results file name in perf/results")
    p.add_argument("--draw_only", action="store_true", help="write the scenes, run nothing")
    args = p.parse_args(argv)
    if Path(args.name).name != args.name or args.name.startswith("."):
        p.error(f"--name {args.name!r}: a plain file name, without folders")
    out = output_folder(args)
    out.mkdir(parents=True, exist_ok=True)
    ru.atomic_write_json({"seed": args.seed, "count": args.count}, out / DRAW_FILE)
    rng = random.Random(args.seed)
    entries = []
    for number in range(1, args.count + 1):
        spec = random_spec(rng, number)  # drawn every time: the draws of the next depend on it
        record = out / "scenes" / f"{number}.json"
        if not record.is_file():  # rendered beside, then moved in: never a half-written scene
            partial = out / "scenes" / f".{number}.partial"
            shutil.rmtree(partial, ignore_errors=True)  # this script's own, from a stopped run
            entry = mes.write_scene(spec, partial)
            shutil.rmtree(out / "scenes" / str(number), ignore_errors=True)  # moved, not recorded
            partial.rename(out / "scenes" / str(number))
            ru.atomic_write_json(entry, record)
        entry = json.loads(record.read_text())
        entries.append(entry | {"scene": f"drawn {number}"})
        print(f"scene {number}: {spec.photo}, {entry['mask']}", flush=True)
    if args.draw_only:
        return
    results = []
    for number in range(1, len(entries) + 1):
        done = out / f"result-{number}.json"
        if not done.is_file():
            print(f"== demo.py on drawn scene {number}", flush=True)
            scene_dir = out / "scenes" / str(number)
            result = run_scene(scene_dir, out / "demo" / str(number), out / f"demo-{number}.log")
            result["fills"] = simple_fills(scene_dir)
            ru.atomic_write_json(result, done)
        results.append(json.loads(done.read_text()))
    lines = report(args, entries, results)
    md = ROOT / "perf" / "results" / f"{args.name}.md"
    ru.write_results(
        md,
        {"command": sys.argv, "seed": args.seed, "scenes": entries, "results": results},
        lines,
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
