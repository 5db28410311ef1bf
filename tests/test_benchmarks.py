"""benchmarks.py and benchmark/suite.py: discovery, the content-keyed cache, parallel metric
processes that fail alone, the ranking command, seed selection and the report files."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, make_scene
from PIL import Image

import benchmarks
from benchmark import report
from benchmark.suite import (
    RANKING_FILE,
    CacheLock,
    HashIndex,
    cache_file,
    discover,
    evaluate,
    merge_cache,
    rank,
    read_cache,
    seed_selection,
    sha256_file,
)

N_IMAGES = 3


def write_results(folder: Path, gt_path: Path, n: int = N_IMAGES, seed: int = 0) -> None:
    """n noisy copies of the ground truth (noise grows with the index: 0.png is best)."""
    folder.mkdir(parents=True)
    gt = np.asarray(Image.open(gt_path).convert("RGB")).astype(int)
    rng = np.random.default_rng(seed)
    for i in range(n):
        noise = rng.integers(-10 * (i + 1), 10 * (i + 1) + 1, gt.shape)
        Image.fromarray(np.clip(gt + noise, 0, 255).astype(np.uint8)).save(folder / f"{i}.png")


@pytest.fixture
def bench_tree(tmp_path):
    """RealBench scenes 1 and 2; results: base for both, variant 'fp16' for scene 1 only."""
    data, results = tmp_path / "data", tmp_path / "results"
    for n in (1, 2):
        make_scene(data / "RealBench" / str(n), seed=n)
    for name, n in (("RealBench-1-results", 1), ("RealBench-2-results", 2),
                    ("RealBench-1-results-fp16", 1)):  # fmt: skip
        write_results(results / name, data / "RealBench" / str(n) / "target" / "gt.png", seed=n)
    return tmp_path


def folders_of(root: Path):
    folders, skipped = discover(root / "results", {"RealBench": root / "data"}, N_IMAGES)
    return folders, skipped


def test_discovery_variants_layouts_and_reasons(bench_tree):
    results, data = bench_tree / "results", bench_tree / "data"
    make_scene(bench_tree / "custom" / "7")  # the <dir>/<N> layout
    write_results(results / "Custom-7-results-fp16-gen", bench_tree / "custom/7/target/gt.png")
    write_results(results / "RealBench-2-results-short", data / "RealBench/2/target/gt.png", n=2)
    (results / "RealBench-9-results").mkdir()
    (results / "notes").mkdir()
    dirs = {"RealBench": data, "Custom": bench_tree / "custom"}
    folders, skipped = discover(results, dirs, N_IMAGES)
    by_name = {f.name: f for f in folders}
    assert by_name["Custom-7-results-fp16-gen"].variant == "fp16-gen"  # the whole suffix
    assert by_name["Custom-7-results-fp16-gen"].scene_dir == bench_tree / "custom" / "7"
    assert by_name["RealBench-1-results"].variant == ""
    assert [p.name for p in by_name["RealBench-1-results"].images] == ["0.png", "1.png", "2.png"]
    reasons = dict(skipped)
    assert "incomplete: 2 of 3" in reasons["RealBench-2-results-short"]
    assert "scene not found" in reasons["RealBench-9-results"]
    assert "name is not" in reasons["notes"]


def test_cache_hits_and_exact_invalidation(bench_tree):
    folders, _ = folders_of(bench_tree)
    cache = bench_tree / "cache"
    first = evaluate(folders, ["PSNR", "SSIM"], cache, progress=False)
    assert first.runs["PSNR"].computed == 3 * N_IMAGES and first.runs["SSIM"].status == "ok"
    again = evaluate(folders, ["PSNR", "SSIM"], cache, progress=False)
    assert again.runs["PSNR"].computed == 0 and again.runs["PSNR"].cached == 3 * N_IMAGES
    assert again.scores == first.scores

    # regenerate one image: exactly its entries are recomputed
    changed = folders[0].images[1]
    Image.fromarray(255 - np.asarray(Image.open(changed))).save(changed)
    third = evaluate(folders, ["PSNR", "SSIM"], cache, progress=False)
    for metric in ("PSNR", "SSIM"):
        assert third.runs[metric].computed == 1
        assert third.computed == {(folders[0].name, m, "1.png") for m in ("PSNR", "SSIM")}
        new, old = third.scores[(folders[0].name, metric)], first.scores[(folders[0].name, metric)]
        assert new["1.png"] != old["1.png"]
        assert new["0.png"] == old["0.png"]

    forced = evaluate(folders, ["PSNR", "SSIM"], cache, force={"SSIM"}, progress=False)
    assert forced.runs["SSIM"].computed == 3 * N_IMAGES and forced.runs["PSNR"].computed == 0


def test_changed_ground_truth_or_mask_invalidates_the_scene(bench_tree):
    folders, _ = folders_of(bench_tree)
    cache = bench_tree / "cache"
    evaluate(folders, ["PSNR"], cache, progress=False)
    mask = np.asarray(Image.open(folders[0].mask)).copy()
    mask[:2] = 255
    Image.fromarray(mask).save(folders[0].mask)  # scene 1: two folders use this mask
    again = evaluate(folders, ["PSNR"], cache, progress=False)
    assert again.runs["PSNR"].computed == 2 * N_IMAGES


def test_corrupt_cache_is_reported_and_recomputed(bench_tree):
    folders, _ = folders_of(bench_tree)
    cache = bench_tree / "cache"
    first = evaluate(folders, ["PSNR"], cache, progress=False)
    broken = cache_file(cache, folders[0].name, "PSNR")
    broken.write_text('{"schema_version": 1, "entries": {"0.png": {"key"')  # killed mid-write
    again = evaluate(folders, ["PSNR"], cache, progress=False)
    assert any(str(broken) in p and "recomputed" in p for p in again.problems)
    assert again.runs["PSNR"].computed == N_IMAGES
    assert again.scores == first.scores
    assert len(read_cache(broken)) == N_IMAGES  # rewritten whole


def test_concurrent_writers_lose_no_entries(tmp_path):
    path = tmp_path / "scores" / "f" / "PSNR.json"

    def writer(prefix: str) -> None:
        lock = CacheLock(tmp_path)  # each "run" has its own lock object, as two processes do
        for i in range(15):
            merge_cache(path, "PSNR", {f"{prefix}{i}.png": {"key": "k", "value": i}}, lock)

    threads = [threading.Thread(target=writer, args=(p,)) for p in "ab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(read_cache(path)) == 30


TURN_TAKER = """
import sys
from pathlib import Path
from benchmark.suite import CacheLock, merge_cache
lock = CacheLock(Path(sys.argv[2]))
print("waiting", flush=True)
merge_cache(Path(sys.argv[1]), "PSNR", {"b.png": {"key": "k", "value": 2.0}}, lock)
"""


def test_two_runs_sharing_a_cache_take_turns(tmp_path):
    path = tmp_path / "scores" / "f" / "PSNR.json"
    command = [sys.executable, "-c", TURN_TAKER, str(path), str(tmp_path)]
    with CacheLock(tmp_path):  # this run is writing...
        other = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
        assert other.stdout.readline() == "waiting\n"
        time.sleep(0.5)
        assert other.poll() is None and not path.exists()  # ...so the other run waits
    assert other.wait(timeout=60) == 0  # and writes once this one is done
    merge_cache(path, "PSNR", {"a.png": {"key": "k", "value": 1.0}}, CacheLock(tmp_path))
    assert sorted(read_cache(path)) == ["a.png", "b.png"]


CRASHING_METRIC = """
import json, sys
jobs = [json.loads(l) for l in open(sys.argv[sys.argv.index("--jobs_file") + 1])]
print(json.dumps({"event": "ready", "metric": "SSIM", "version": "1", "params": {}}))
print(json.dumps({"event": "score", "id": jobs[0]["id"], "value": 0.5, "resized": False}))
sys.stdout.flush()
raise SystemExit("simulated crash after one image")
"""


def test_a_crashing_or_hanging_metric_loses_nothing_of_the_others(bench_tree):
    folders, _ = folders_of(bench_tree)
    cache = bench_tree / "cache"
    commands = {"SSIM": [sys.executable, "-c", CRASHING_METRIC]}
    ev = evaluate(folders, ["PSNR", "SSIM"], cache, commands=commands, progress=False)
    assert ev.runs["PSNR"].status == "ok" and ev.runs["PSNR"].computed == 3 * N_IMAGES
    assert ev.runs["SSIM"].status.startswith("failed")
    assert "simulated crash" in ev.runs["SSIM"].status
    assert ev.runs["SSIM"].computed == 1  # what it streamed before crashing is kept...
    assert len(read_cache(cache_file(cache, folders[0].name, "SSIM"))) == 1  # ...and cached

    hang = {"SSIM": [sys.executable, "-c", "import time; time.sleep(60)"]}
    ev = evaluate(folders, ["PSNR", "SSIM"], cache, commands=hang, timeout=1, progress=False)
    assert ev.runs["SSIM"].status.startswith("timed out")
    assert ev.runs["PSNR"].cached == 3 * N_IMAGES


def test_seed_selection_keeps_the_top_ranked():
    scores = {f"{i}.png": float(i) for i in range(16)}
    order = [f"{i}.png" for i in reversed(range(16))]  # best first: 15, 14, ...
    means = seed_selection(scores, order)
    assert means[0.0] == pytest.approx(7.5)
    assert means[0.75] == pytest.approx(np.mean([15, 14, 13, 12]))
    odd = seed_selection({"a": 1.0, "b": 2.0, "c": 3.0}, ["c", "b", "a"], (0.5,))
    assert odd[0.5] == pytest.approx(2.5)  # ceil(3 * 0.5) = 2 kept


FAKE_RANKER = """
import hashlib, json, sys
from pathlib import Path
args = sys.argv[1:]
get = lambda flag: args[args.index(flag) + 1]
sha = lambda p: hashlib.sha256(Path(p).read_bytes()).hexdigest()
assert "--rank-only" in args
assert Path(get("--ref-dir")).is_dir() and Path(get("--mask")).is_file()
names = sorted(p.name for p in Path(get("--source-dir")).glob("*.png"))
candidates = [{"image": n, "sha256": sha(Path(get("--source-dir")) / n), "score": 10 - i,
               "per_reference": {}, "error": None} for i, n in enumerate(reversed(names))]
refs = {p.name: sha(p) for p in Path(get("--ref-dir")).iterdir()}
Path(get("--ranking-output-file")).write_text(json.dumps(
    {"schema_version": 1, "settings": {"matcher": get("--matcher")}, "tie_break": "median_rms",
     "references": sorted(refs),
     "reference_sha256": refs, "mask_sha256": sha(get("--mask")), "candidates": candidates}))
"""


def test_a_file_replaced_with_its_size_and_time_is_hashed_again(tmp_path):
    index = HashIndex(tmp_path / "file_hashes.json")
    image, other = tmp_path / "0.png", tmp_path / "other.png"
    image.write_bytes(b"a" * 64)
    other.write_bytes(b"b" * 64)
    first = index(image)
    index.changed = False
    assert index(image) == first and not index.changed  # remembered, not hashed again
    times = image.stat()
    os.replace(other, image)  # `cp -p`-like: same size, the old file's times
    os.utime(image, ns=(times.st_atime_ns, times.st_mtime_ns))
    assert index(image) == sha256_file(image) != first and index.changed


def test_ranking_runs_where_missing_changed_or_forced(bench_tree, tmp_path, monkeypatch):
    script = tmp_path / "fake_ranker.py"
    script.write_text(FAKE_RANKER)
    monkeypatch.setenv("REALFILL_RANKING_SCRIPT", str(script))
    folders, _ = folders_of(bench_tree)
    rankings = rank(folders, matcher="sift")
    assert rankings[folders[0].name] == ["2.png", "1.png", "0.png"]
    ranking = folders[0].folder / RANKING_FILE

    def reran(**kwargs) -> bool:
        ranking.write_text(json.dumps(json.loads(ranking.read_text()) | {"mark": 1}))
        rank(folders, **kwargs)
        return "mark" not in json.loads(ranking.read_text())  # rewritten by the ranker

    assert not reran(matcher="sift")  # unchanged inputs: the ranking file is trusted
    older = json.loads(ranking.read_text())
    del older["tie_break"]  # a ranking from before ties were ordered by agreement
    ranking.write_text(json.dumps(older))
    assert reran(matcher="sift")
    image = folders[0].images[0]
    times = image.stat()
    Image.new("RGB", Image.open(image).size, (1, 2, 3)).save(image)
    os.utime(image, ns=(times.st_atime_ns, times.st_mtime_ns))  # changed, with its old time
    assert reran(matcher="sift")
    assert reran(matcher="loftr")  # ranked with another matcher than the one asked for
    assert reran(matcher="loftr", force=True)
    script.write_text("raise SystemExit('no weights here')")
    failed = rank(folders, matcher="sift", force=True, jobs=1)
    assert all(isinstance(r, str) for r in failed.values())
    assert any("no weights here" in r for r in failed.values())
    assert any(r.startswith("not run") for r in failed.values())  # same failure: stop trying


def test_benchmarks_end_to_end_report(bench_tree, tmp_path, monkeypatch):
    script = tmp_path / "fake_ranker.py"
    script.write_text(FAKE_RANKER)
    monkeypatch.setenv("REALFILL_RANKING_SCRIPT", str(script))
    out = bench_tree / "report" / "bench.txt"
    argv = ["--results_base_dir", str(bench_tree / "results"),
            "--realbench_dataset_dir", str(bench_tree / "data"),
            "--cache_dir", str(bench_tree / "cache"), "--output_file", str(out),
            "--metrics", "psnr", "SSIM", "--num_images", str(N_IMAGES),
            "--ranking_matcher", "sift"]  # fmt: skip
    outputs = benchmarks.run(benchmarks.parse_args(argv), progress=False)
    text, md = out.read_text(), outputs["Markdown report"].read_text()
    assert "PSNR ↑" in md and "SSIM ↑" in md and "LPIPS ↓" in md  # arrows, paper rows too
    assert "quoted, not measured here" in md and "14.78" in md
    assert "base vs fp16" in text  # compared over the one common scene
    comparison = next(line for line in md.splitlines() if "base vs fp16" in line)
    assert comparison.split("|")[3].strip() == "1"
    assert "| RealBench | base | 2 | 75% |" in md  # seed selection over ranked scenes
    rows = json.loads(outputs["per-image scores (JSON)"].read_text())["scores"]
    assert len(rows) == 3 * N_IMAGES and all(r["PSNR"] > 0 and r["rank"] for r in rows)
    csv_lines = outputs["per-image scores (CSV)"].read_text().strip().splitlines()
    assert len(csv_lines) == 1 + 3 * N_IMAGES
    sheets = sorted((out.parent / "bench_contact_sheets").glob("*.jpg"))
    assert sorted(s.stem for s in sheets) == sorted(f.name for f in folders_of(bench_tree)[0])
    assert (out.parent / "bench_plots" / "metrics.png").is_file()
    assert (out.parent / "bench_plots" / "seed_selection.png").is_file()
    # the 75% row keeps ceil(3 * 0.25) = 1 image: the ranked-best one (the fake ranks 2.png
    # first, the noisiest), so its PSNR is below the all-images mean
    line = {
        r.split("|")[4].strip(): r
        for r in md.splitlines()
        if r.startswith("| RealBench | base | 2 |")
    }
    psnr_all, psnr_75 = (float(line[d].split("|")[5]) for d in ("0%", "75%"))
    assert psnr_75 < psnr_all and not math.isnan(psnr_75)


def test_a_result_of_another_size_is_resized_and_reported(bench_tree, monkeypatch):
    monkeypatch.setenv("REALFILL_RANKING_SCRIPT", str(bench_tree / "no_ranking_script.py"))
    folders, _ = folders_of(bench_tree)
    image = folders[1].images[0]
    big = Image.open(image)
    big.resize((big.width * 2, big.height * 2), Image.Resampling.BICUBIC).save(image)
    out = bench_tree / "report" / "r.txt"
    argv = ["--results_base_dir", str(bench_tree / "results"),
            "--realbench_dataset_dir", str(bench_tree / "data"),
            "--cache_dir", str(bench_tree / "cache"), "--output_file", str(out),
            "--metrics", "PSNR", "--num_images", str(N_IMAGES)]  # fmt: skip
    benchmarks.run(benchmarks.parse_args(argv), progress=False)
    assert f"1 image was resized ({folders[1].name})" in out.read_text()
    rows = json.loads((bench_tree / "report" / "r_scores.json").read_text())["scores"]
    flagged = [(r["folder"], r["image"]) for r in rows if r["resized"]]
    assert flagged == [(folders[1].name, image.name)]


def test_a_broken_image_or_mask_of_another_size_still_gets_its_report(bench_tree, monkeypatch):
    monkeypatch.setenv("REALFILL_RANKING_SCRIPT", str(bench_tree / "no_ranking_script.py"))
    folders, _ = folders_of(bench_tree)
    folders[0].images[1].write_bytes(folders[0].images[1].read_bytes()[:60])  # cut short
    mask = folders[1].mask  # the metrics refuse it; the report and its pictures go on
    Image.open(mask).resize((20, 20), Image.Resampling.NEAREST).save(mask)
    out = bench_tree / "report" / "r.txt"
    argv = ["--results_base_dir", str(bench_tree / "results"),
            "--realbench_dataset_dir", str(bench_tree / "data"),
            "--cache_dir", str(bench_tree / "cache"), "--output_file", str(out),
            "--metrics", "PSNR", "--num_images", str(N_IMAGES)]  # fmt: skip
    with pytest.raises(benchmarks.ScoresMissing, match="image score"):  # exit 1, not 0
        benchmarks.run(benchmarks.parse_args(argv), progress=False)
    assert out.is_file() and out.with_suffix(".md").is_file()
    sheets = bench_tree / "report" / "r_contact_sheets"
    assert {p.stem for p in sheets.glob("*.jpg")} == {f.name for f in folders}


def test_the_report_never_lands_in_a_dataset_or_on_a_stranger(bench_tree, monkeypatch):
    monkeypatch.setenv("REALFILL_RANKING_SCRIPT", str(bench_tree / "no_ranking_script.py"))
    scene_mask = bench_tree / "data" / "RealBench" / "1" / "target" / "mask.png"
    before = scene_mask.read_bytes()
    mine = bench_tree / "mine"
    mine.mkdir()
    (mine / "notes_scores.csv").write_text("my own table")
    base = ["--results_base_dir", str(bench_tree / "results"),
            "--realbench_dataset_dir", str(bench_tree / "data"), "--metrics", "PSNR",
            "--num_images", str(N_IMAGES)]  # fmt: skip
    cache = ["--cache_dir", str(bench_tree / "cache")]
    for bad in (
        [*cache, "--output_file", str(scene_mask)],
        ["--cache_dir", str(scene_mask.parent), "--output_file", str(mine / "r.txt")],
        [*cache, "--output_file", str(mine / "notes.txt")],  # notes_scores.csv is not a report's
    ):  # fmt: skip
        assert benchmarks.main([*base, *bad]) == 2, bad
    assert scene_mask.read_bytes() == before
    assert (mine / "notes_scores.csv").read_text() == "my own table"
    assert sorted(p.name for p in mine.iterdir()) == ["notes_scores.csv"]
    assert benchmarks.main([*base, *cache, "--output_file", str(mine / "r.txt")]) == 0
    assert benchmarks.main([*base, *cache, "--output_file", str(mine / "r.txt")]) == 0  # its own


def test_relative_paths_work_from_any_folder(bench_tree, tmp_path, monkeypatch):
    # the metric processes run from the repository root; relative paths given from elsewhere
    # must still reach them
    script = tmp_path / "fake_ranker.py"
    script.write_text(FAKE_RANKER)
    monkeypatch.setenv("REALFILL_RANKING_SCRIPT", str(script))
    monkeypatch.chdir(bench_tree)
    argv = ["--results_base_dir", "results", "--realbench_dataset_dir", "data",
            "--cache_dir", "cache", "--output_file", "report/rel.txt", "--metrics", "PSNR",
            "--num_images", str(N_IMAGES), "--ranking_matcher", "sift"]  # fmt: skip
    args = benchmarks.parse_args(argv)
    assert args.results_base_dir.is_absolute() and args.output_file.is_absolute()
    outputs = benchmarks.run(args, progress=False)
    rows = json.loads(outputs["per-image scores (JSON)"].read_text())["scores"]
    assert len(rows) == 3 * N_IMAGES and all(r["PSNR"] and r["PSNR"] > 0 for r in rows)


def test_nothing_to_evaluate_exits_non_zero_and_says_so(tmp_path, monkeypatch, capsys):
    """Scenes without gt.png: no metric can run, nothing is reported "ok", the exit is 2."""
    scene = make_scene(tmp_path / "data" / "Custom" / "flowerwoman")
    write_results(tmp_path / "results" / "Custom-flowerwoman-results", scene / "target/gt.png")
    (scene / "target" / "gt.png").unlink()
    argv = ["--results_base_dir", str(tmp_path / "results"),
            "--custom_dataset_dir", str(tmp_path / "data"),
            "--cache_dir", str(tmp_path / "cache"), "--output_file", str(tmp_path / "r.txt"),
            "--num_images", str(N_IMAGES)]  # fmt: skip
    monkeypatch.setattr(sys, "argv", ["benchmarks.py", *argv])
    assert benchmarks.main() == 2
    err = capsys.readouterr().err
    assert "only the gt-free correspondence ranking can run" in err  # a word-named scene
    assert "error: nothing to evaluate" in err
    assert ": ok" not in err and "0 folders evaluated" not in err
    assert not (tmp_path / "r.txt").exists()


def test_gt_free_scene_is_ranked_when_asked(tmp_path, monkeypatch, capsys):
    script = tmp_path / "fake_ranker.py"
    script.write_text(FAKE_RANKER)
    monkeypatch.setenv("REALFILL_RANKING_SCRIPT", str(script))
    scene = make_scene(tmp_path / "data" / "Custom" / "my_garden")
    results = tmp_path / "results" / "Custom-my_garden-results"
    write_results(results, scene / "target/gt.png")
    (scene / "target" / "gt.png").unlink()
    argv = ["--results_base_dir", str(tmp_path / "results"),
            "--custom_dataset_dir", str(tmp_path / "data"), "--metrics", "loftr",
            "--ranking_matcher", "sift", "--num_images", str(N_IMAGES)]  # fmt: skip
    monkeypatch.setattr(sys, "argv", ["benchmarks.py", *argv])
    assert benchmarks.main() == 0
    err = capsys.readouterr().err
    assert "Custom-my_garden-results: ranked" in err and "skipping" not in err  # as asked
    assert (results / RANKING_FILE).is_file()
    script.write_text("import sys; sys.exit('no correspondences today')")  # a ranking that fails
    monkeypatch.setattr(sys, "argv", ["benchmarks.py", *argv, "--force_recalc", "loftr"])
    assert benchmarks.main() == 1  # asked to rank, ranked nothing: not a success
    assert "1 of 1 folders could not be ranked" in capsys.readouterr().err
    monkeypatch.setattr(sys, "argv", ["benchmarks.py", *argv[:-4], "--ranking_matcher", "sitf"])
    with pytest.raises(SystemExit) as parsed:  # a typo is answered now, not per folder
        benchmarks.main()
    assert parsed.value.code == 2 and "invalid choice: 'sitf'" in capsys.readouterr().err


def test_a_missing_image_is_named(bench_tree):
    (bench_tree / "results" / "RealBench-2-results" / "1.png").unlink()
    _, skipped = folders_of(bench_tree)
    reason = dict(skipped)["RealBench-2-results"]
    assert reason == "incomplete: 2 of 3 images; missing 1.png"


def test_a_metric_that_scored_nothing_is_not_ok(tmp_path):
    ev = evaluate([], ["PSNR", "LPIPS"], tmp_path / "cache", progress=False)
    assert {m: r.status for m, r in ev.runs.items()} == {
        "PSNR": "nothing scored",
        "LPIPS": "nothing scored",
    }


def test_paper_table_comes_from_its_data_file_with_sources():
    table = json.loads(report.PAPER_FILE.read_text())
    assert all(row["source"] and len(row["values"]) == 6 for row in table["rows"])
    md = report.render_markdown(report.paper_blocks())
    assert "| method | PSNR ↑ | SSIM ↑ | LPIPS ↓ | DreamSim ↓ | DINO ↑ | CLIP ↑ |" in md
    assert "| SD Inpaint | 10.63 | 0.282 | 0.605 | 0.213 | 0.831 | 0.874 |" in md
    assert "| RealFill (paper) | 14.78 | 0.424 | 0.431 | 0.077 | 0.948 | 0.962 |" in md
    assert "| RealFill, seed selection drop 75% | 15.10 | 0.427 | 0.417 | 0.060 | 0.961 |" in md
    assert "| GeoComplete (NeurIPS 2025) | 17.32 | 0.578 | 0.197 | 0.036 | 0.986 | 0.987 |" in md
    assert len([line for line in md.splitlines() if line.startswith("| ")]) == 1 + 7
