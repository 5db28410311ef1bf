"""The quality gate's verdicts (perf/bench_quality.py) follow its figures: a goal is met when
and only when the numbers say so, and the files are written where they are asked for."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "perf"))

import bench_quality as bq  # noqa: E402

from benchmark.suite import DROP_RATES  # noqa: E402

SCENES = ["Custom-1", "Custom-4", "Custom-5"]  # flat, parallax, unseen (data/scenes.json)


def scores(psnr: float, ssim: float, drop_gain: float = 0.0) -> dict:
    """A variant's seed-selection table: the same at every drop rate but 75%."""
    return {
        "PSNR": {d: psnr + (drop_gain if d == 0.75 else 0.0) for d in DROP_RATES},
        "SSIM": {d: ssim for d in DROP_RATES},
    }


def gate(realfill=15.0, untuned=11.0, geo=(20.0, 21.0, 12.0), telea=12.0, warp=19.0):
    """Tables where RealFill scores `realfill` everywhere and the geometry-guided variant
    `geo` per scene; Telea and the mean fill `telea`, the warp fill `warp`."""
    table, references = {}, {}
    for s, geo_psnr in zip(SCENES, geo, strict=True):
        table[(s, "")] = scores(realfill, 0.4, drop_gain=0.1)
        table[(s, "")]["orderings"] = {
            "psnr_at_75": {k: realfill + i for i, k in enumerate(bq.ORDERINGS)},
            "rho_count": -0.1,
            "rho_median": 0.5,
            "tied_at_the_cut": 9,
        }
        table[(s, "untuned")] = scores(untuned, 0.2)
        table[(s, "refill")] = scores(realfill, 0.4)
        table[(s, "geo")] = scores(geo_psnr, 0.5)
        for variant in ("dpmpp25", "dpmpp50"):
            table[(s, variant)] = scores(realfill, 0.4)
        for row in bq.REFERENCE_ROWS:
            psnr = warp if row == "warp" else telea
            references[(s, row)] = {"PSNR": psnr, "SSIM": 0.3, "seconds": 0.1}
    records = {
        s: {
            v: {"timings": {"generate_s": 2.0}}
            for v in ("", "untuned", "refill", "geo", "dpmpp25", "dpmpp50")
        }
        for s in SCENES
    }
    for s in SCENES:
        records[s][""].update(
            refill_note=None, refill_seconds=60.0, warp_seconds=1.0, hole_covered_by_references=0
        )
    return table, references, records


def goals_of(**kwargs) -> dict:
    table, references, records = gate(**kwargs)
    kinds = bq.scene_kinds(SCENES)
    assert kinds == {"Custom-1": "flat", "Custom-4": "parallax", "Custom-5": "unseen"}
    return bq.gate_goals(SCENES, kinds, table, references, records, 16)[0]


def test_goals_are_met_exactly_when_the_figures_clear_them():
    met = goals_of()
    assert met == {
        "psnr_gain": True,  # +4 dB and better SSIM
        "beats_simple_fills": True,
        "seed_selection": True,
        "geo_near_warp_on_flat": True,  # +1 dB over the warp
        "geo_parallax_Custom-4": True,  # +2 over the warp, +6 over RealFill
        "geo_unseen_Custom-5": False,  # 12 < 15: worse than RealFill
    }
    missed = goals_of(realfill=13.0, untuned=11.0, telea=13.5, geo=(17.9, 13.5, 13.0))
    assert missed == {
        "psnr_gain": False,  # +2 dB only
        "beats_simple_fills": False,  # below Telea
        "seed_selection": True,
        "geo_near_warp_on_flat": False,  # 1.1 dB under the warp
        "geo_parallax_Custom-4": False,  # +0.5 over RealFill only
        "geo_unseen_Custom-5": True,
    }


def test_results_go_where_asked_and_the_docs_summary_keeps_the_geometry_goals(tmp_path):
    table, references, records = gate()
    args = types.SimpleNamespace(
        recipe={}, base_model="toy", num_images=16, resolution=64, max_train_steps=10,
        strength=0.4,
    )  # fmt: skip
    md = bq.write_results("gate", args, SCENES, table, references, records, results_dir=tmp_path)
    assert md == tmp_path / "gate.md"
    assert json.loads(md.with_suffix(".json").read_text())["goals_met"]["psnr_gain"] is True
    text = md.read_text()
    for s in SCENES:
        assert f"| {s} | " in text  # a per-scene row each
    assert "| completions tied at the cut | 9 | 9 | 9 | |" in text
    summary = bq.geometry_summary(md)
    assert "Custom-4 (parallax)" in summary and "**not met**" in summary  # the unseen goal
    assert "RealFill minus un-tuned" not in summary  # only the geometry goals


def test_selection_orderings_rank_the_same_completions_each_way(tmp_path):
    """Eight completions whose PSNR rises with their number; the correspondences favour 1.png
    alone and the median distance falls as the PSNR rises: each ordering keeps its own two."""
    names = [f"{i}.png" for i in range(8)]
    psnr = {n: 10.0 + i for i, n in enumerate(names)}
    count = {n: 3 if n == "1.png" else 0 for n in names}
    median = {n: 17.0 - psnr[n] for n in names}
    order = sorted(names, key=lambda n: (-count[n], median[n]))
    ranking = tmp_path / "loftr_ranking_scores.json"
    ranking.write_text(json.dumps({"candidates": [
        {"image": n, "score": count[n], "median_rms": median[n]} for n in order
    ]}))  # fmt: skip
    images = [{"image": n, "PSNR": psnr[n], "rank": order.index(n) + 1} for n in names]
    got = bq.selection_orderings(images, ranking)
    assert got["psnr_at_75"] == {
        "ranking": (11.0 + 17.0) / 2,  # 1.png by its count, then 7.png nearest the median
        "by_name": (11.0 + 10.0) / 2,  # 1.png, then 0.png: the first name among the ties
        "median": (17.0 + 16.0) / 2,
        "oracle": (17.0 + 16.0) / 2,
    }
    assert got["rho_median"] == pytest.approx(1.0) and -1 < got["rho_count"] < 0
    assert got["tied_at_the_cut"] == 7  # the second kept shares its count (0) with six others
    counts = {"a": 3, "b": 2, "c": 1, "d": 1}
    assert bq.tied_at_cut(list(counts), counts, drop=0.5) == 0  # the cut falls between counts
    assert bq.tied_at_cut(list(counts), counts, drop=0.25) == 2  # c kept, d dropped: a tie


def test_selection_orderings_without_distances_give_no_figures_for_them(tmp_path):
    names = ["0.png", "1.png", "2.png", "3.png"]
    ranking = tmp_path / "loftr_ranking_scores.json"
    ranking.write_text(json.dumps({"candidates": [
        {"image": n, "score": 4 - i if i < 3 else None, "median_rms": None}
        for i, n in enumerate(names)
    ]}))  # fmt: skip
    images = [{"image": n, "PSNR": 10.0 + i, "rank": i + 1} for i, n in enumerate(names)]
    got = bq.selection_orderings(images, ranking)
    assert got["psnr_at_75"]["median"] is None and got["rho_median"] is None
    assert got["rho_count"] is None  # 3.png failed: it has no count to correlate
    assert got["psnr_at_75"]["by_name"] == 10.0  # 0.png has the most; the failed 3.png is last


@pytest.mark.parametrize("kind", ["parallax", "unseen"])
def test_scene_kinds_come_from_the_manifest(kind):
    manifest = json.loads((ROOT / "data" / "scenes.json").read_text())["scenes"]
    assert kind in bq.scene_kinds([e["scene"].replace("/", "-") for e in manifest]).values()
