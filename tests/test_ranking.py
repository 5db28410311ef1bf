"""loftr_ranking.py: fill-region scores, the pair cache, errors in the JSON, LoFTR's code path and
its offline failure, and selection into a new scene folder (the dataset stays untouched)."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import tree_digest
from PIL import Image
from skimage import data

import loftr_ranking as lr

SIZE = 160  # px: big enough for SIFT to find the photo's structure, small enough to be quick


def photo(size: int = SIZE, name: str = "astronaut") -> np.ndarray:
    image = Image.fromarray(getattr(data, name)()).convert("RGB")
    return np.asarray(image.resize((size, size), Image.Resampling.LANCZOS))


def make_photo_scene(root: Path, seed: int = 0) -> Path:
    """RealBench-layout scene from a real photo: references are perspective warps of it (png and
    jpg, of other sizes), the target is the photo with a white centre hole."""
    rng = np.random.default_rng(seed)
    world = photo()
    (root / "ref").mkdir(parents=True)
    (root / "target").mkdir()
    corners = np.float32([[0, 0], [SIZE, 0], [SIZE, SIZE], [0, SIZE]])
    for i in range(3):
        moved = corners + rng.uniform(-0.12, 0.12, (4, 2)).astype(np.float32) * SIZE
        warp = cv2.getPerspectiveTransform(corners, moved)
        ref = cv2.warpPerspective(world, warp, (SIZE + 24 * i, SIZE), borderMode=cv2.BORDER_REFLECT)
        Image.fromarray(ref).save(root / "ref" / f"{i}.{'jpg' if i % 2 else 'png'}", quality=95)
    fill_mask = np.zeros((SIZE, SIZE), bool)
    fill_mask[SIZE * 3 // 10 : SIZE * 7 // 10, SIZE * 3 // 10 : SIZE * 7 // 10] = True
    Image.fromarray(fill_mask.astype(np.uint8) * 255).save(root / "target" / "mask.png")
    target = world.copy()
    target[fill_mask] = 255
    Image.fromarray(target).save(root / "target" / "target.png")
    Image.fromarray(world).save(root / "target" / "gt.png")
    return root


def fill_with(content: np.ndarray, fill_mask: np.ndarray) -> Image.Image:
    """The scene's photo with `content` in the filled region (a fake completion)."""
    out = photo().copy()
    out[fill_mask] = content[fill_mask]
    return Image.fromarray(out)


def make_completions(scene: Path, folder: Path) -> Path:
    """true.png: the hole holds the true content; noise, grey, other: it holds noise, flat grey,
    another photo. All share the known region with the target."""
    fill_mask = lr.load_mask(scene / "target" / "mask.png")
    rng = np.random.default_rng(1)
    folder.mkdir(parents=True)
    fill_with(photo(), fill_mask).save(folder / "true.png")
    fill_with(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8), fill_mask).save(
        folder / "noise.png"
    )
    fill_with(np.full((SIZE, SIZE, 3), 128, np.uint8), fill_mask).save(folder / "grey.png")
    fill_with(photo(name="coffee"), fill_mask).save(folder / "other.png")
    return folder


@pytest.fixture(scope="module")
def photo_scene(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("ranking")
    scene = make_photo_scene(root / "data" / "RealBench" / "0")
    return scene, make_completions(scene, root / "results" / "RealBench-0-results")


def images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix in (".png", ".jpg"))


class CountingMatcher:
    """Wraps a matcher and counts the pairs it is really asked to match."""

    def __init__(self, inner):
        self.inner, self.calls = inner, 0
        self.name, self.multiple, self.max_side = inner.name, inner.multiple, inner.max_side

    def settings(self):
        return self.inner.settings()

    def match(self, reference, candidate):
        self.calls += 1
        return self.inner.match(reference, candidate)


def rank(scene: Path, completions: Path, matcher, cache=None, fill_mask=None, **kw) -> dict:
    if fill_mask is None:
        fill_mask = lr.load_mask(scene / "target" / "mask.png")
    return lr.rank_completions(
        images(completions), images(scene / "ref"), fill_mask, matcher, cache=cache, **kw
    )


def scores(ranking: dict) -> dict[str, int]:
    return {c["image"]: c["score"] for c in ranking["candidates"]}


def test_sift_ranks_the_true_fill_first(photo_scene):
    scene, completions = photo_scene
    ranking = rank(scene, completions, lr.make_matcher("sift"))
    order = [c["image"] for c in ranking["candidates"]]
    got = scores(ranking)
    assert order[0] == "true.png", got
    assert got["true.png"] > 4 * max(got["noise.png"], got["grey.png"], got["other.png"]), got
    assert ranking["references"] == ["0.png", "1.jpg", "2.png"]  # jpg references count too
    for c in ranking["candidates"]:
        assert c["error"] is None and sum(c["per_reference"].values()) == c["score"]
        assert set(c["per_reference"]) == set(ranking["references"])


def test_only_the_filled_region_counts(photo_scene):
    """The noise fill shares the whole known region with the target: matched over the whole
    image it scores well, yet its fill-region score is far below the true fill's."""
    scene, completions = photo_scene
    matcher = lr.make_matcher("sift")
    whole = scores(rank(scene, completions, matcher, fill_mask=np.ones((SIZE, SIZE), bool)))
    fill = scores(rank(scene, completions, matcher))
    assert whole["noise.png"] > 0.5 * whole["true.png"], whole
    assert fill["noise.png"] < 0.2 * fill["true.png"], fill


def test_dilation_and_mask_resizing():
    fill_mask = np.zeros((10, 20), bool)
    fill_mask[4:6, 8:12] = True
    grown = lr.dilate(fill_mask, 2)
    assert grown[2, 10] and grown[4, 6] and not grown[1, 10] and not grown[4, 5]
    assert lr.mask_for(fill_mask, (40, 20), 0).sum() == 4 * fill_mask.sum()  # same aspect
    with pytest.raises(lr.SceneError, match="aspect"):
        lr.mask_for(fill_mask, (20, 20), 0)
    points = np.array([[9.0, 4.0], [0.0, 0.0], [11.4, 5.4], [11.6, 5.0]])
    assert lr.count_inside(points, fill_mask) == 2  # (11.6, 5) rounds to column 12: outside


def test_cache_hits_and_invalidation(photo_scene, tmp_path):
    scene, original = photo_scene
    completions = tmp_path / "results"
    completions.mkdir()
    for p in images(original):
        (completions / p.name).write_bytes(p.read_bytes())
    cache = lr.PairCache(tmp_path / "cache")
    matcher = CountingMatcher(lr.make_matcher("sift"))
    first = rank(scene, completions, matcher, cache=cache)
    assert matcher.calls == 4 * 3

    matcher.calls = 0
    start = time.perf_counter()
    again = rank(scene, completions, matcher, cache=cache)
    assert matcher.calls == 0 and again == first  # every pair came from the cache
    assert time.perf_counter() - start < 1.0

    # A changed completion is matched again, and only it; its score follows its new content.
    fill_mask = lr.load_mask(scene / "target" / "mask.png")
    fill_with(np.ascontiguousarray(photo()[::-1]), fill_mask).save(completions / "true.png")
    changed = rank(scene, completions, matcher, cache=cache)
    assert matcher.calls == 3
    assert scores(changed)["true.png"] < 0.2 * scores(first)["true.png"]
    assert {k: v for k, v in scores(changed).items() if k != "true.png"} == {
        k: v for k, v in scores(first).items() if k != "true.png"
    }

    # Settings that change the answer are part of the key; a damaged entry is recomputed.
    matcher.calls = 0
    known = set((tmp_path / "cache").glob("*.json"))
    rank(scene, completions, matcher, cache=cache, mask_dilation=0)
    assert matcher.calls == 12
    entry = sorted(set((tmp_path / "cache").glob("*.json")) - known)[0]
    entry.write_text("{half a file")
    matcher.calls = 0
    rank(scene, completions, matcher, cache=cache, mask_dilation=0)
    assert matcher.calls == 1
    assert not list((tmp_path / "cache").glob(".*tmp*"))  # atomic writes leave no temp files


class HoleMatcher:
    """Finds `counts[name]` correspondences in the hole's centre of each candidate, none
    elsewhere: the ranking's order then rests on these counts and its tie-break alone."""

    name, multiple, max_side = "sift", 1, SIZE

    def __init__(self, counts: dict[str, int]):
        self.counts = counts

    def settings(self):
        return {"matcher": self.name, "weights": None}

    def match(self, reference, candidate):
        return np.full((self.counts.get(candidate.name, 0), 2), SIZE / 2)


def test_equal_counts_go_to_the_completion_nearest_the_others(photo_scene, tmp_path):
    """Ties in the correspondence count are ordered by the distance to the per-pixel median
    of all the completions (nearest first), not by file name; a higher count still wins."""
    scene, _ = photo_scene
    fill_mask = lr.load_mask(scene / "target" / "mask.png")
    rng = np.random.default_rng(3)
    folder = tmp_path / "results"
    folder.mkdir()
    truth = photo().astype(float)
    for name, noise in (("0.png", 60), ("1.png", 25), ("2.png", 5), ("3.png", 15)):
        fill = np.clip(truth + rng.normal(0, noise, truth.shape), 0, 255).astype(np.uint8)
        fill_with(fill, fill_mask).save(folder / name)
    ranking = rank(scene, folder, HoleMatcher({}), fill_mask=fill_mask)
    rows = ranking["candidates"]
    assert ranking["tie_break"] == "median_rms"
    assert [c["image"] for c in rows] == ["2.png", "3.png", "1.png", "0.png"], rows
    assert [c["score"] for c in rows] == [0, 0, 0, 0]
    distances = [c["median_rms"] for c in rows]
    assert distances == sorted(distances) and distances[0] < 0.5 * distances[-1]
    counted = rank(scene, folder, HoleMatcher({"0.png": 1, "1.png": 1}), fill_mask=fill_mask)
    assert [c["image"] for c in counted["candidates"]] == ["1.png", "0.png", "2.png", "3.png"]


def test_median_distances_compare_the_hole_only_and_need_three(tmp_path):
    fill_mask = np.zeros((8, 8), bool)
    fill_mask[2:6, 2:6] = True
    folder = tmp_path
    for name, inside, outside in (("a.png", 100, 0), ("b.png", 110, 255), ("c.png", 130, 9)):
        image = np.full((8, 8, 3), outside, np.uint8)
        image[fill_mask] = inside
        Image.fromarray(image).save(folder / name)
    paths = sorted(folder.iterdir())
    assert lr.median_distances(paths, fill_mask) == {"a.png": 10.0, "b.png": 0.0, "c.png": 20.0}
    assert lr.median_distances(paths[:2], fill_mask) == {}
    (folder / "d.png").write_bytes(b"not an image")  # skipped; the matching reports it
    assert lr.median_distances([*paths, folder / "d.png"], fill_mask)["c.png"] == 20.0
    thin = np.zeros((600, 900), bool)
    thin[300:302, 100:800] = True  # 2 px high: under one pixel at the 256-px comparison size
    for path in paths:
        Image.fromarray(np.where(thin[..., None], 40 * paths.index(path), 0).astype(np.uint8)
                        .repeat(3, axis=2)).save(path)  # fmt: skip
    got = lr.median_distances(paths, thin)  # levels 0, 40, 80 on the line: b.png is the median
    assert got["b.png"] == 0.0 and got["a.png"] > 5
    assert got["a.png"] == pytest.approx(got["c.png"], rel=0.1)


class FailingMatcher(CountingMatcher):
    def match(self, reference, candidate):
        if candidate.name == "grey.png" and reference.name == "1.jpg":
            raise RuntimeError("out of memory")
        return super().match(reference, candidate)


def test_failures_are_errors_in_the_json_never_zero(photo_scene, tmp_path):
    scene, original = photo_scene
    completions = tmp_path / "results"
    completions.mkdir()
    for p in images(original):
        (completions / p.name).write_bytes(p.read_bytes())
    (completions / "broken.png").write_bytes(b"not an image")
    Image.new("RGB", (SIZE * 2, SIZE)).save(completions / "wide.png")  # not the mask's aspect
    cache = lr.PairCache(tmp_path / "cache")
    ranking = rank(scene, completions, FailingMatcher(lr.make_matcher("sift")), cache=cache)
    rows = {c["image"]: c for c in ranking["candidates"]}
    # the median the tie-break measures against is of the three ranked completions only
    ranked = [completions / n for n in ("noise.png", "other.png", "true.png")]
    assert {n: c["median_rms"] for n, c in rows.items() if c["error"] is None} == (
        lr.median_distances(ranked, lr.load_mask(scene / "target" / "mask.png"))
    )
    assert [c["image"] for c in ranking["candidates"]][-3:] == [
        "broken.png",
        "grey.png",
        "wide.png",
    ]
    for name in ("broken.png", "grey.png", "wide.png"):
        assert rows[name]["score"] is None and rows[name]["error"].startswith(name)
    assert "1.jpg" in rows["grey.png"]["error"] and "out of memory" in rows["grey.png"]["error"]
    assert "aspect" in rows["wide.png"]["error"]
    assert rows["true.png"]["error"] is None
    # The failed pair was not cached: a later run tries it again.
    matcher = CountingMatcher(lr.make_matcher("sift"))
    rank(scene, completions, matcher, cache=cache)
    assert matcher.calls == 2  # grey.png x 1.jpg and x 2.png (never reached); 0.png was cached


def test_cli_rank_only_writes_the_documented_json(photo_scene, tmp_path, capsys):
    scene, original = photo_scene
    completions = tmp_path / "RealBench-0-results"
    completions.mkdir()
    for i, p in enumerate(images(original)):
        (completions / f"{i}.png").write_bytes(p.read_bytes())
    before = tree_digest(scene)
    argv = ["--rank-only", "--source-dir", str(completions), "--ref-dir", str(scene / "ref")]
    assert lr.main([*argv, "--matcher", "sift"]) == 0  # the mask is found beside ref/
    data = json.loads((completions / lr.SCORES_FILE).read_text())
    assert set(data) == {"schema_version", "settings", "tie_break", "references",
                         "reference_sha256", "mask_sha256", "candidates"}  # fmt: skip
    assert data["mask_sha256"] == lr.file_sha256(scene / "target" / "mask.png")
    assert data["reference_sha256"] == {p.name: lr.file_sha256(p) for p in images(scene / "ref")}
    assert data["schema_version"] == 1
    settings = data["settings"]
    assert settings["matcher"] == "sift" and settings["max_side"] == lr.MAX_SIDE["sift"]
    assert settings["mask"] == str((scene / "target" / "mask.png").resolve())
    for key in ("model_type", "conf_threshold", "mask_dilation", "weights"):
        assert key in settings
    by_score = [c["score"] for c in data["candidates"]]
    assert by_score == sorted(by_score, reverse=True)
    for c in data["candidates"]:
        assert set(c) == {"image", "sha256", "score", "per_reference", "error", "median_rms"}
        assert c["median_rms"] >= 0
        assert c["sha256"] == lr.file_sha256(completions / c["image"])
    assert (completions / lr.CACHE_DIR_NAME).is_dir()  # default cache beside the completions
    assert tree_digest(scene) == before
    assert "4 ranked" in capsys.readouterr().out
    # beside numbered completions, another image (a warp fill's uncertainty map) is no candidate
    (completions / "uncertainty.png").write_bytes((completions / "0.png").read_bytes())
    assert lr.main([*argv, "--matcher", "sift"]) == 0
    data = json.loads((completions / lr.SCORES_FILE).read_text())
    assert sorted(c["image"] for c in data["candidates"]) == ["0.png", "1.png", "2.png", "3.png"]
    assert "not uncertainty.png" in capsys.readouterr().err
    # a mask of another target is refused before any matching, and the good scores are kept
    kept = (completions / lr.SCORES_FILE).read_bytes()
    wide = tmp_path / "wide_mask.png"
    mask = Image.open(scene / "target" / "mask.png")
    mask.resize((mask.width * 2, mask.height)).save(wide)
    assert lr.main([*argv, "--matcher", "sift", "--mask", str(wide)]) == 2
    assert "another aspect ratio" in capsys.readouterr().err
    assert (completions / lr.SCORES_FILE).read_bytes() == kept


def test_selection_builds_a_new_scene_and_leaves_the_dataset_alone(photo_scene, tmp_path):
    scene, completions = photo_scene
    before = tree_digest(scene)
    out = tmp_path / "RealBench-0-refill-scene"
    argv = ["--source-dir", str(completions), "--ref-dir", str(scene / "ref"), "--matcher", "sift"]
    assert lr.main([*argv, "--target-count", "5", "--output-scene-dir", str(out)]) == 0
    assert tree_digest(scene) == before
    refs = sorted(p.name for p in (out / "ref").iterdir())
    assert len(refs) == 5 and {"0.png", "1.jpg", "2.png", "refill-true.png"} < set(refs)
    for name in ("0.png", "1.jpg", "2.png"):
        assert (out / "ref" / name).read_bytes() == (scene / "ref" / name).read_bytes()
    assert (out / "ref" / "refill-true.png").read_bytes() == (completions / "true.png").read_bytes()
    assert tree_digest(out / "target") == tree_digest(scene / "target")
    record = json.loads((out / lr.SELECTION_FILE).read_text())
    assert [c["image"] for c in record["chosen"]][0] == "true.png"
    assert record["original_references"] == ["0.png", "1.jpg", "2.png"]
    assert json.loads((out / lr.SCORES_FILE).read_text())["candidates"][0]["image"] == "true.png"

    # The new scene may not lie inside the dataset scene; an unknown folder is never replaced.
    inside = scene / "refill"
    assert lr.main([*argv, "--target-count", "5", "--output-scene-dir", str(inside)]) == 2
    assert not inside.exists()
    stranger = tmp_path / "someone-elses"
    stranger.mkdir()
    (stranger / "notes.txt").write_text("keep me")
    assert lr.main([*argv, "--target-count", "5", "--output-scene-dir", str(stranger)]) == 2
    assert (stranger / "notes.txt").read_text() == "keep me"
    # its own scene is rebuilt, but a file the user added there is refused, not lost
    assert lr.main([*argv, "--target-count", "5", "--output-scene-dir", str(out)]) == 0
    (out / "ref" / "extra.png").write_bytes(b"mine")
    assert lr.main([*argv, "--target-count", "5", "--output-scene-dir", str(out)]) == 2
    assert (out / "ref" / "extra.png").read_bytes() == b"mine"


def test_refusals_come_before_any_matching_and_touch_nothing(photo_scene, tmp_path, monkeypatch):
    scene, completions = photo_scene
    before, results_before = tree_digest(scene), tree_digest(completions)

    def no_matcher(*args, **kwargs):
        raise AssertionError("a refused run loaded a matcher")

    monkeypatch.setattr(lr, "make_matcher", no_matcher)
    argv = ["--source-dir", str(completions), "--ref-dir", str(scene / "ref"), "--matcher", "sift"]
    rank_only = [*argv, "--rank-only"]
    notes = tmp_path / "notes.json"
    notes.write_text('{"mine": 1}')
    for bad in (
        [*rank_only, "--ranking-output-file", str(scene / "target" / "mask.png")],  # in the scene
        [*rank_only, "--ranking-output-file", str(notes)],  # a file it did not write
        [*rank_only, "--cache-dir", str(scene / "target" / "cache")],
        [*argv, "--target-count", "5", "--output-scene-dir", str(scene / "ref" / "x")],
        ["--rank-only", "--source-dir", str(scene / "target"), "--ref-dir", str(scene / "ref")],
    ):
        assert lr.main(bad) == 2, bad
    with pytest.raises(SystemExit) as parsed:  # argparse's own refusal, status 2
        lr.main([*argv, "--target-count", "0", "--output-scene-dir", str(tmp_path / "new")])
    assert parsed.value.code == 2
    assert notes.read_text() == '{"mine": 1}'
    assert not (tmp_path / "new").exists()
    assert tree_digest(scene) == before and tree_digest(completions) == results_before


def test_mask_problems_are_refused_and_a_0_1_mask_is_read_as_one(photo_scene, tmp_path):
    scene, completions = photo_scene
    argv = ["--rank-only", "--source-dir", str(completions), "--ref-dir", str(scene / "ref"),
            "--matcher", "sift"]  # fmt: skip
    mask = lr.load_mask(scene / "target" / "mask.png")
    empty, ones = tmp_path / "empty.png", tmp_path / "ones.png"
    Image.fromarray(np.zeros(mask.shape, np.uint8)).save(empty)
    Image.fromarray(mask.astype(np.uint8)).save(ones)  # 0 and 1, as numpy writes masks
    out = tmp_path / "scores.json"
    assert lr.main([*argv, "--mask", str(empty), "--ranking-output-file", str(out)]) == 2
    assert not out.exists()
    assert np.array_equal(lr.load_mask(ones), mask)
    assert lr.main([*argv, "--mask", str(ones), "--ranking-output-file", str(out)]) == 0
    assert json.loads(out.read_text())["candidates"][0]["image"] == "true.png"
    assert lr.main([*argv, "--mask", str(ones), "--ranking-output-file", str(out)]) == 0  # own


@pytest.fixture
def one_torch_thread():
    """On a shared 2-core machine torch's thread pool mostly waits on itself: one thread is
    several times faster for these tiny inputs."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_loftr_code_path_with_untrained_weights(photo_scene, one_torch_thread):
    """kornia LoFTR with pretrained=None (seeded) runs end to end: untrained weights find no
    confident matches, so every score is 0, but each pair ran and nothing is an error."""
    scene, completions = photo_scene
    matcher = CountingMatcher(lr.make_matcher("loftr", weights=lr.RANDOM_WEIGHTS, max_side=64))
    candidates = [completions / "true.png", completions / "noise.png"]
    ranking = lr.rank_completions(
        candidates, [scene / "ref" / "1.jpg"], lr.load_mask(scene / "target" / "mask.png"), matcher
    )
    assert matcher.calls == 2
    assert ranking["settings"]["matcher"] == "loftr"
    assert ranking["settings"]["weights"] == lr.RANDOM_WEIGHTS
    assert [(c["score"], c["error"]) for c in ranking["candidates"]] == [(0, None), (0, None)]
    assert [c["image"] for c in ranking["candidates"]] == ["noise.png", "true.png"]  # ties: name


def test_loftr_local_checkpoint_loads(tmp_path, one_torch_thread):
    import torch
    from kornia.feature import LoFTR

    torch.manual_seed(1)
    state = LoFTR(pretrained=None).state_dict()
    path = tmp_path / "loftr_outdoor.ckpt"
    torch.save({"state_dict": {f"matcher.{k}": v for k, v in state.items()}}, path)
    matcher = lr.make_matcher("loftr", weights=str(path))
    assert matcher.settings()["weights_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    model = lr.load_loftr(matcher.weights, "outdoor", "cpu")
    key = next(iter(state))
    assert torch.equal(model.state_dict()[key], state[key])
    (tmp_path / "junk.ckpt").write_bytes(b"junk")
    with pytest.raises(lr.SceneError, match="not a LoFTR checkpoint"):
        lr.load_loftr(str(tmp_path / "junk.ckpt"), "outdoor", "cpu")


def test_loftr_without_weights_offline_fails_fast(photo_scene, tmp_path, monkeypatch, capsys):
    scene, completions = photo_scene
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty-torch-home"))  # no cached checkpoint
    monkeypatch.delenv(lr.WEIGHTS_ENV, raising=False)
    import kornia.feature  # noqa: F401
    import torch  # noqa: F401  (imported before the clock starts: the check itself is timed)

    start = time.perf_counter()
    argv = ["--rank-only", "--source-dir", str(completions), "--ref-dir", str(scene / "ref")]
    assert lr.main(argv) == 2
    assert time.perf_counter() - start < 5
    message = capsys.readouterr().err
    assert "--loftr_weights" in message and "--matcher sift" in message
    assert not (completions / lr.SCORES_FILE).exists()
    monkeypatch.setenv(lr.WEIGHTS_ENV, str(tmp_path / "missing.ckpt"))
    assert lr.main(argv) == 2
    assert "missing.ckpt" in capsys.readouterr().err


def test_snake_case_flags_parse_to_the_same_values(tmp_path):
    kebab = lr.parse_args(
        [
            "--source-dir",
            "a",
            "--ref-dir",
            "b",
            "--target-count",
            "5",
            "--output-scene-dir",
            "c",
            "--loftr-weights",
            "w",
            "--mask-dilation",
            "2",
            "--no-cache",
        ]  # fmt: skip
    )
    snake = lr.parse_args(
        [
            "--source_dir",
            "a",
            "--ref_dir",
            "b",
            "--target_count",
            "5",
            "--output_scene_dir",
            "c",
            "--loftr_weights",
            "w",
            "--mask_dilation",
            "2",
            "--no_cache",
        ]  # fmt: skip
    )
    assert vars(kebab) == vars(snake)
    assert snake.source_dir == Path("a") and snake.target_count == 5 and snake.no_cache


def test_file_sha256_is_the_sha256_of_the_bytes(tmp_path):
    path = tmp_path / "blob.bin"
    path.write_bytes(bytes(range(256)) * 1000)
    assert lr.file_sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest()
