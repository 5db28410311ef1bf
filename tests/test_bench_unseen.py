"""perf/bench_unseen.py draws valid new scenes, the same ones for the same seed, and never
writes into a folder that holds something."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import pytest
from conftest import tree_digest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "perf"))

import bench_unseen as bu  # noqa: E402

import realfill_utils as ru  # noqa: E402


def test_drawn_scenes_load_and_repeat_with_their_seed(tmp_path):
    for run in ("a", "b"):
        bu.main(["--draw_only", "--count", "3", "--seed", "5", "--output_dir", str(tmp_path / run)])
    assert tree_digest(tmp_path / "a") == tree_digest(tmp_path / "b")
    for number in (1, 2, 3):
        scene = ru.load_scene(tmp_path / "a" / "scenes" / str(number))
        assert 2 <= len(scene.references) <= 3
        assert 0.02 < scene.fill_mask.mean() < 0.7  # a hole, not the whole image
        assert scene.gt.size == scene.target.size
    bu.main(["--draw_only", "--count", "1", "--seed", "6", "--output_dir", str(tmp_path / "c")])
    first_scene = {  # another seed draws another first scene
        run: {k: v for k, v in tree_digest(tmp_path / run).items() if k.startswith("scenes/1/")}
        for run in ("a", "c")
    }
    assert first_scene["a"] and first_scene["a"] != first_scene["c"]
    assert first_scene["a"].keys() & first_scene["c"].keys()  # the same files, other pixels


def test_foreign_folders_are_refused_and_its_own_goes_on(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    with pytest.raises(SystemExit, match="not empty"):
        bu.main(["--draw_only", "--output_dir", str(tmp_path)])
    assert tree_digest(tmp_path) == {"keep.txt": hashlib.sha256(b"mine").hexdigest()}
    with pytest.raises(SystemExit):
        bu.main(["--draw_only", "--name", "../elsewhere", "--output_dir", str(tmp_path / "n")])
    own = tmp_path / "own"
    argv = ["--draw_only", "--count", "2", "--output_dir", str(own)]
    bu.main(argv)
    first = tree_digest(own)
    (own / "scenes" / "2.json").unlink()  # as if stopped while drawing the second scene
    (own / "scenes" / "2").rename(own / "scenes" / ".2.partial")
    bu.main(argv)  # the same seed and count: it goes on, and draws the same scene again
    assert tree_digest(own) == first
    with pytest.raises(SystemExit, match="drawn with"):
        bu.main([*argv[:-2], "--seed", "9", "--output_dir", str(own)])


def test_the_report_follows_the_figures():
    def scores(psnr: float, best: float) -> dict:
        return {"PSNR": {"all": psnr, "best_25": best}, "SSIM": {"all": 0.3, "best_25": 0.3}}

    entries = [
        {"scene": f"drawn {i}", "photo": "coffee", "mask": "m", "hole_fraction": 0.1,
         "hole_seen_by_references": 1.0}
        for i in (1, 2)
    ]  # fmt: skip
    fills = {"mean": {"PSNR": 12.0, "SSIM": 0.2}, "telea": {"PSNR": 13.0, "SSIM": 0.35}}
    results = [
        {"seconds": 150.0, "fills": fills, "completions": 16,
         "scores": {"untuned": scores(11.0, 11.0), "realfill": scores(15.0, 15.5)}},
        {"seconds": 170.0, "fills": fills, "completions": 16,
         "scores": {"untuned": scores(12.0, 12.0), "realfill": scores(14.0, 13.0)}},
    ]  # fmt: skip
    args = type("Args", (), {"seed": 1})()
    text = "\n".join(bu.report(args, entries, results))
    assert "**+3.00 dB** PSNR" in text  # (15 + 14) / 2 - (11 + 12) / 2
    assert "on 0 of 2 scenes" in text  # SSIM 0.3 is below Telea's 0.35 on both
    assert "best 25% minus all kept: -0.25 dB" in text
    assert "150-170 s" in text
