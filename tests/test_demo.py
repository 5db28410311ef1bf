"""The README's first command, `python demo.py`, end to end at reduced steps."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, tree_digest

import realfill_utils as ru


def test_demo_trains_completes_ranks_and_reports(tmp_path):
    import shutil

    import demo

    assert demo.parse_args([]).scene == ROOT / "data" / "Custom" / "1"  # `python demo.py`
    # a user's layout: the scene's name is no benchmark name, the output sits beside the scene
    photos = tmp_path / "photos"
    shutil.copytree(ROOT / "data" / "Custom" / "1", photos / "my scene-1")
    before = tree_digest(photos / "my scene-1")
    out = photos / "demo"
    cmd = [
        sys.executable, "demo.py", "--scene", str(photos / "my scene-1"), "--output_dir",
        str(out), "--max_train_steps", "2", "--num_images", "2", "--num_inference_steps", "2",
        "--train_batch_size", "2",
    ]  # fmt: skip
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert tree_digest(photos / "my scene-1") == before  # the scene is only read
    assert sorted(p.name for p in photos.iterdir()) == ["demo", "my scene-1"]
    results = out / "results" / "Custom-my_scene_1-results"
    record = json.loads((results / "completions.json").read_text())
    assert record["base_model"] == str(ru.TOY_MODEL)
    scene = photos / "my scene-1" / "target"
    target = np.asarray(ru.load_image(scene / "target.png"), dtype=np.int16)
    known = np.asarray(ru.load_mask(scene / "mask.png")) == 0
    far = ~ru.feather(ru.load_mask(scene / "mask.png"), ru.FEATHER_RADIUS).astype(bool)
    for i in range(2):
        completion = np.asarray(ru.load_image(results / f"{i}.png"), dtype=np.int16)
        assert completion.shape == target.shape
        assert np.array_equal(completion[known & far], target[known & far])
    ranking = json.loads(next(results.glob("*rank*.json")).read_text())
    ranked = sorted(c["image"] for c in ranking["candidates"])
    assert ranked == ["0.png", "1.png"]  # every completion ranked, none invented
    report = (out / "benchmark_report.txt").read_text()
    assert "Custom-my_scene_1-results" in report and "PSNR" in report
    assert str(out / "benchmark_report.txt") in done.stdout  # it says where the report is
    # the un-tuned base completed the same scene with the same seeds, side by side
    untuned = json.loads(
        (out / "results" / "Custom-my_scene_1-results-untuned" / "completions.json").read_text()
    )
    assert untuned["seeds"] == record["seeds"] and untuned["model_kind"] != record["model_kind"]
    assert "| un-tuned base | all |" in done.stdout and "| RealFill | all |" in done.stdout
    sheet = ru.load_image(out / "Custom-my_scene_1-untuned-vs-realfill.jpg")
    assert sheet.height > 2 * sheet.width / 8  # three rows: scene, un-tuned, RealFill


def test_bad_scene_or_output_folder_stops_the_demo_before_anything_runs(tmp_path, capsys):
    import shutil

    import demo

    scenes = tmp_path / "scenes"
    shutil.copytree(ROOT / "data" / "Custom" / "1", scenes / "ok")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    for scene, out, expected in (
        ("absent", tmp_path / "o1", "not found"),
        ("ok", scenes / "ok" / "demo", "overlaps the scene"),
        ("ok", mine, "did not write"),
    ):
        argv = ["--scene", str(scenes / scene), "--output_dir", str(out)]
        assert demo.main(argv) == ru.EXIT_INPUT, scene
        assert expected in capsys.readouterr().err
    # what a stage would refuse is refused first: a resolution the model cannot take
    argv = ["--scene", str(scenes / "ok"), "--output_dir", str(tmp_path / "o3")]
    assert demo.main([*argv, "--resolution", "60"]) == ru.EXIT_INPUT
    assert "is not a multiple of" in capsys.readouterr().err
    missing, empty = tmp_path / "loftr_outdoor.ckpt", tmp_path / "empty.ckpt"
    empty.write_bytes(b"")
    for weights, expected in (
        (missing, f"{missing}: LoFTR checkpoint not found"),
        (tmp_path, f"{tmp_path} is a folder"),
        (empty, f"{empty}: not a LoFTR checkpoint kornia can load"),
    ):
        assert demo.main([*argv, "--matcher", "loftr", "--loftr_weights", str(weights)]) == 2
        assert expected in capsys.readouterr().err
    with pytest.raises(SystemExit) as parsed:  # weights for a matcher that takes none
        demo.parse_args([*argv, "--loftr_weights", str(missing)])
    assert parsed.value.code == 2 and "is for --matcher loftr" in capsys.readouterr().err
    assert not (tmp_path / "o1").exists()
    assert not (tmp_path / "o3").exists() and not (scenes / "ok" / "demo").exists()
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]


def test_the_summary_says_when_completions_were_not_ranked(tmp_path):
    import demo

    rows = [{"variant": "base", "rank": rank, "PSNR": psnr, "SSIM": 0.5}
            for rank, psnr in ((1, 20.0), (0, 30.0), (2, 10.0), (3, 10.0))]  # fmt: skip
    rows += [{"variant": "untuned", "rank": None, "PSNR": 5.0, "SSIM": 0.1}] * 4
    scores = tmp_path / "scores.json"
    scores.write_text(json.dumps({"scores": rows}))
    lines, unranked = demo.summary(scores, {"un-tuned base": "untuned", "RealFill": ""})
    assert unranked == ["un-tuned base"]
    assert "| un-tuned base | best 25% | not ranked | | |" in lines
    assert "| RealFill | best 25% | 30.000 | 0.500 | n/a |" in lines  # rank 0 first
    assert "| RealFill | all | 17.500 | 0.500 | n/a |" in lines


def test_contact_sheet_shows_unranked_completions_in_seed_order(tmp_path):
    import demo

    scene = ROOT / "data" / "Custom" / "1"
    target = ru.load_image(scene / "target" / "target.png")
    folders = {"ranked": tmp_path / "ranked", "unranked": tmp_path / "unranked"}
    for folder in folders.values():
        folder.mkdir()
        for i, grey in enumerate((0, 80, 160, 240)):
            target.point(lambda _, g=grey: g).save(folder / f"{i}.png")
    from benchmark.suite import sha256_file

    def rank(folder, order):
        candidates = [{"image": f"{i}.png", "sha256": sha256_file(folder / f"{i}.png")}
                      for i in order]  # fmt: skip
        (folder / "loftr_ranking_scores.json").write_text(json.dumps({"candidates": candidates}))

    def first_cells(sheet):
        cells = np.asarray(ru.load_image(sheet), dtype=float)
        row = cells.shape[0] // 3
        return cells[row + 30 : 2 * row - 10, 10:150].mean(), cells[2 * row + 30 :, 10:150].mean()

    rank(folders["ranked"], (3, 2, 1, 0))
    sheet = tmp_path / "sheet.jpg"
    demo.contact_sheet(scene, folders, sheet)  # no ranking file: no crash, seed order
    first_ranked, first_unranked = first_cells(sheet)
    assert first_ranked > 200 and first_unranked < 40  # best-ranked (240) first; seed 0 (0) first
    rank(folders["unranked"], (3, 2, 1, 0))
    target.point(lambda _: 120).save(folders["unranked"] / "3.png")  # changed since: stale
    demo.contact_sheet(scene, folders, sheet)
    assert first_cells(sheet)[1] < 40  # a stale ranking is not used: seed order


def test_a_scene_without_ground_truth_is_ranked_and_shown_not_scored(tmp_path, monkeypatch, capsys):
    import shutil

    import demo

    scene = tmp_path / "photos" / "kitchen"
    shutil.copytree(ROOT / "data" / "Custom" / "1", scene)
    (scene / "target" / "gt.png").unlink()
    before = tree_digest(scene)
    target = ru.load_image(scene / "target" / "target.png")
    ran = []

    def stage(name, command):  # train and infer faked; the benchmark's ranking is real
        ran.append(name)
        command = [str(part) for part in command]
        out = Path(command[command.index("--output_dir") + 1]) if name != "rank" else None
        if name == "train":
            out.mkdir(parents=True)
        elif name.startswith("infer"):
            out.mkdir(parents=True)
            for i in range(4):
                target.rotate(i * 90 % 180).save(out / f"{i}.png")
        else:
            done = subprocess.run([sys.executable, *command], cwd=ROOT, timeout=300)
            assert done.returncode == 0

    monkeypatch.setattr(demo, "run", stage)
    out = tmp_path / "demo"
    argv = ["--scene", str(scene), "--output_dir", str(out), "--num_images", "4"]
    assert demo.main(argv) == ru.EXIT_OK
    assert ran == ["train", "infer (RealFill)", "infer (un-tuned base)", "rank"]
    said = capsys.readouterr().out
    assert "No ground truth" in said and "PSNR" not in said
    for folder in ("Custom-kitchen-results", "Custom-kitchen-results-untuned"):
        ranking = json.loads((out / "results" / folder / "loftr_ranking_scores.json").read_text())
        assert sorted(c["image"] for c in ranking["candidates"]) == [f"{i}.png" for i in range(4)]
    sheet = ru.load_image(out / "Custom-kitchen-untuned-vs-realfill.jpg")
    assert sheet.height > 2 * sheet.width / 8  # target, then the two methods' rows
    assert tree_digest(scene) == before

    def failing(name, command):  # a ranking that fails: the sheet is drawn all the same
        if name == "rank":
            raise demo.engine.StageFailed("benchmarks.py exited with status 1")
        stage(name, command)

    monkeypatch.setattr(demo, "run", failing)
    shutil.rmtree(out)
    assert demo.main(argv) != ru.EXIT_OK
    assert (out / "Custom-kitchen-untuned-vs-realfill.jpg").is_file()
    assert "demo stopped" in capsys.readouterr().err
