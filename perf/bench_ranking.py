"""Time loftr_ranking.py: 16 completions x 3 references, per matcher, cold and cached.

The scene is built from a photo shipped with scikit-image: a 512x512 target with a centred
hole, three references that are perspective warps of the photo (512x512 png, 640x480 jpg,
480x640 png), and 16 completions whose fill blends the true content (completion 0) into
another photo (completion 15), so a matcher should rank them in order; the Spearman
correlation of its ranking with that order is reported as a sanity check.

No trained LoFTR weights exist on this machine, so LoFTR is timed with untrained weights
(`pretrained=None`, seeded). They find no confident matches, which skips LoFTR's fine stage;
the `loftr-dense` rows therefore also lower the coarse threshold to 0, so that every mutual
nearest neighbour goes through the fine stage, a heavier load than trained weights produce.
The `earlier` rows redo what the earlier implementation did per pair (both images at their own
size through the whole network, nothing reused) on a few pairs, side by side.

Times are wall seconds and, since the machine may be shared, also process CPU seconds.

    python perf/bench_ranking.py                     # default max side, all matchers
    python perf/bench_ranking.py --max-sides 256 384 512 --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import loftr_ranking as lr  # noqa: E402
import realfill_utils as ru  # noqa: E402
from realfill_utils import atomic_path, atomic_write_json, load_mask  # noqa: E402

RESULTS = ROOT / "perf" / "results"
NUM_CANDIDATES, SIZE = 16, 512
PAIR_GOAL_S, CACHED_GOAL_S = 1.0, 1.0  # the goals


def build_scene(root: Path) -> tuple[Path, Path]:
    """Write <root>/scene (ref/, target/) and <root>/results (0.png .. 15.png)."""
    from skimage import data

    def photo(name: str, size=(SIZE, SIZE)) -> np.ndarray:
        image = Image.fromarray(getattr(data, name)()).convert("RGB")
        return np.asarray(image.resize(size, Image.Resampling.LANCZOS)).astype(np.float32)

    world, other = photo("astronaut"), photo("coffee")
    scene, results = root / "scene", root / "results"
    (scene / "ref").mkdir(parents=True)
    (scene / "target").mkdir()
    results.mkdir()
    rng = np.random.default_rng(0)
    corners = np.float32([[0, 0], [SIZE, 0], [SIZE, SIZE], [0, SIZE]])
    for size, name in [((512, 512), "0.png"), ((640, 480), "1.jpg"), ((480, 640), "2.png")]:
        moved = corners + rng.uniform(-0.1, 0.1, (4, 2)).astype(np.float32) * SIZE
        scale = np.diag([size[0] / SIZE, size[1] / SIZE, 1.0])
        warp = scale @ cv2.getPerspectiveTransform(corners, moved)
        ref = cv2.warpPerspective(world.astype(np.uint8), warp, size, borderMode=cv2.BORDER_REFLECT)
        Image.fromarray(ref).save(scene / "ref" / name, quality=95)
    fill_mask = np.zeros((SIZE, SIZE), bool)
    fill_mask[SIZE // 4 : 3 * SIZE // 4, SIZE // 4 : 3 * SIZE // 4] = True
    Image.fromarray(fill_mask.astype(np.uint8) * 255).save(scene / "target" / "mask.png")
    target = world.copy()
    target[fill_mask] = 255
    Image.fromarray(target.astype(np.uint8)).save(scene / "target" / "target.png")
    for i in range(NUM_CANDIDATES):
        t = i / (NUM_CANDIDATES - 1)
        completion = world.copy()
        completion[fill_mask] = ((1 - t) * world + t * other)[fill_mask]
        Image.fromarray(np.rint(completion).astype(np.uint8)).save(results / f"{i}.png")
    return scene, results


def spearman(ranking: dict) -> float:
    """Rank correlation of the matcher's order with the true order (0.png best)."""
    order = [int(Path(c["image"]).stem) for c in ranking["candidates"]]
    d = np.arange(len(order)) - np.array(order)
    n = len(order)
    return float(1 - 6 * (d**2).sum() / (n * (n**2 - 1)))


def timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def bench_matcher(kind: str, max_side: int, scene: Path, results: Path, work: Path) -> dict:
    """Cold (empty cache, model already loaded) and cached (new matcher, warm cache) ranks."""
    references = sorted((scene / "ref").iterdir())
    candidates = sorted(results.glob("*.png"), key=lambda p: lr.natural_key(p.name))
    fill_mask = load_mask(scene / "target" / "mask.png")
    pairs = len(candidates) * len(references)

    max_side = max_side or lr.MAX_SIDE["sift" if kind == "sift" else "loftr"]

    def matcher():
        if kind == "sift":
            return lr.make_matcher("sift", max_side=max_side)
        return lr.make_matcher("loftr", weights=lr.RANDOM_WEIGHTS, max_side=max_side)

    m = matcher()
    load_s = 0.0
    if kind.startswith("loftr"):
        m.model, load_s, _ = timed(lambda: lr.load_loftr(m.weights, m.model_type, m.device))
        if kind == "loftr-dense":
            m.model.coarse_matching.thr = 0.0  # every mutual nearest neighbour is a match
    cache = lr.PairCache(work / f"cache-{kind}-{max_side}")

    def rank(matcher_):
        return lr.rank_completions(
            candidates, references, fill_mask, matcher_, cache=cache, progress=False
        )

    ranking, cold_s, cold_cpu = timed(lambda: rank(m))
    again, cached_s, cached_cpu = timed(lambda: rank(matcher()))
    assert again == ranking and cache.hits == pairs
    errors = [c["error"] for c in ranking["candidates"] if c["error"]]
    return {
        "matcher": kind,
        "max_side": max_side,
        "pairs": pairs,
        "model_load_s": round(load_s, 2),
        "cold_s": round(cold_s, 2),
        "cold_cpu_s": round(cold_cpu, 2),
        "s_per_pair": round(cold_s / pairs, 3),
        "cpu_s_per_pair": round(cold_cpu / pairs, 3),
        "cached_s": round(cached_s, 3),
        "cached_cpu_s": round(cached_cpu, 3),
        "best_score": ranking["candidates"][0]["score"],
        "spearman": round(spearman(ranking), 3) if ranking["candidates"][0]["score"] else None,
        "errors": len(errors),
    }


def bench_earlier(scene: Path, results: Path, dense: bool, pairs: int = 3) -> dict:
    """The earlier per-pair cost: both images at their own size through the whole network."""
    import torch

    model = lr.load_loftr(lr.RANDOM_WEIGHTS, "outdoor", "cpu")
    if dense:
        model.coarse_matching.thr = 0.0
    references = sorted((scene / "ref").iterdir())[:pairs]

    def gray(path: Path):
        image = np.asarray(Image.open(path).convert("L"), dtype=np.float32) / 255.0
        return torch.from_numpy(image)[None, None]

    def run():
        for ref in references:
            with torch.inference_mode():
                model({"image0": gray(ref), "image1": gray(results / "0.png")})

    _, wall, cpu = timed(run)
    return {
        "matcher": "earlier-loftr-dense" if dense else "earlier-loftr",
        "max_side": "native (512-640)",
        "pairs": pairs,
        "s_per_pair": round(wall / pairs, 3),
        "cpu_s_per_pair": round(cpu / pairs, 3),
    }


def bench_cli_cached(scene: Path, results: Path, work: Path) -> dict:
    """Whole-command wall time of a cached `--rank-only --matcher sift` re-run (imports too)."""
    command = [sys.executable, str(ROOT / "loftr_ranking.py"), "--rank-only", "--matcher", "sift",
               "--source-dir", str(results), "--ref-dir", str(scene / "ref"),
               "--cache-dir", str(work / "cli-cache"),
               "--ranking-output-file", str(work / "cli.json")]  # fmt: skip
    env = os.environ | {"HF_HUB_OFFLINE": "1"}
    subprocess.run(command, check=True, capture_output=True, env=env)
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, env=env)
    return {"cli_cached_rerank_s": round(time.perf_counter() - start, 2)}


def markdown(report: dict) -> str:
    lines = [
        f"# Ranking: {NUM_CANDIDATES} completions x 3 references ({report['host']})",
        "",
        f"torch threads: {report['torch_threads']}; LoFTR weights: untrained (timing only). "
        "Cold: empty pair cache, model already loaded (load time in its own column). "
        "Cached: a new matcher over the warm cache.",
        "",
        "| matcher | max side | s/pair | CPU s/pair | cold total s | cached total s | "
        "model load s | Spearman | errors |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["rows"]:
        lines.append(
            f"| {r['matcher']} | {r['max_side']} | {r['s_per_pair']} | {r['cpu_s_per_pair']} | "
            f"{r.get('cold_s', '-')} | {r.get('cached_s', '-')} | {r.get('model_load_s', '-')} | "
            f"{r.get('spearman') if r.get('spearman') is not None else '-'} | "
            f"{r.get('errors', '-')} |"
        )
    lines += ["", f"Whole command, cached SIFT re-rank (Python and library imports included): "
              f"{report['cli_cached_rerank_s']} s.", ""]  # fmt: skip
    if report.get("speedup"):
        pairs = "; ".join(f"{k}: {v}" for k, v in report["speedup"].items())
        lines.append(f"Per-pair speed-up over the earlier way, same run: {pairs}.")
    lines.append(f"\nCommand: `{report['command']}`\n")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=ru.HelpFormatter,
    )
    parser.add_argument(
        "--max-sides",
        type=int,
        nargs="+",
        default=[0],
        help="matching sizes to time; 0 = each matcher's default",
    )
    parser.add_argument(
        "--matchers",
        nargs="+",
        default=["sift", "loftr", "loftr-dense"],
        choices=["sift", "loftr", "loftr-dense"],
        help="matchers to time (loftr-dense: LoFTR with its coarse threshold at 0)",
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's own choice)"
    )
    parser.add_argument("--no-earlier", action="store_true", help="skip the earlier-way rows")
    parser.add_argument("--name", default="ranking", help="results file stem in perf/results")
    parser.add_argument(
        "--markdown-only",
        action="store_true",
        help="re-render <name>.md from an existing <name>.json, time nothing",
    )
    args = parser.parse_args(argv)  # fmt: skip
    if args.markdown_only:
        report = json.loads((RESULTS / f"{args.name}.json").read_text())
        with atomic_path(RESULTS / f"{args.name}.md") as tmp:
            tmp.write_text(markdown(report))
        return
    import torch

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        scene, results = build_scene(work)
        for max_side in args.max_sides:
            for kind in args.matchers:
                rows.append(bench_matcher(kind, max_side, scene, results, work))
                print(json.dumps(rows[-1]), flush=True)
        speedup = {}
        if not args.no_earlier:
            for dense in (False, True):
                rows.append(bench_earlier(scene, results, dense))
                print(json.dumps(rows[-1]), flush=True)
                ours = [r for r in rows if r["matcher"] == ("loftr-dense" if dense else "loftr")]
                for r in ours:
                    key = f"{r['matcher']}@{r['max_side']}"
                    speedup[key] = round(rows[-1]["cpu_s_per_pair"] / r["cpu_s_per_pair"], 1)
        cli = bench_cli_cached(scene, results, work)
    report = {
        "host": f"{platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}",
        "torch_threads": torch.get_num_threads(),
        "goals": {"s_per_pair": PAIR_GOAL_S, "cached_total_s": CACHED_GOAL_S},
        "rows": rows,
        "speedup": speedup and {k: f"{v}x (CPU s)" for k, v in speedup.items()},
        "command": "python perf/bench_ranking.py " + " ".join(argv or sys.argv[1:]),
        **cli,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    atomic_write_json(report, RESULTS / f"{args.name}.json")
    with atomic_path(RESULTS / f"{args.name}.md") as tmp:
        tmp.write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
