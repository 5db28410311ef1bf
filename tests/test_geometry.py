"""The warp fill (geometry.py, warp_fill.py): recovers a known homography, leaves the known
region alone, reports what it cannot align, and refuses bad input with a clear message."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import geometry
import warp_fill
from loftr_ranking import make_matcher
from realfill_utils import FEATHER_RADIUS, feather, load_scene

DATA = Path(__file__).resolve().parents[1] / "data"
# a reference 1.25x zoomed, rotated 4 degrees, shifted and slightly tilted; maps ref -> target
TRUE_H = np.array([[0.78, -0.055, 30.0], [0.055, 0.78, 12.0], [2e-4, -1e-4, 1.0]])


def textured(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A photo-like texture: smoothed noise at several scales, uint8 RGB."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    out = np.zeros((height, width, 3))
    for sigma, gain in ((1.0, 0.6), (3.0, 1.0), (8.0, 1.5)):
        out += gain * gaussian_filter(rng.normal(size=(height, width, 3)), (sigma, sigma, 0))
    out = (out - out.min()) / (out.max() - out.min())
    return np.clip(out * 255, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def synthetic_pair():
    """(target, fill_mask, reference, ground truth): the target is the reference warped by
    TRUE_H, with a centred hole painted white."""
    import cv2

    reference = textured(320, 240)
    gt = cv2.warpPerspective(reference, TRUE_H, (256, 192), flags=cv2.INTER_LINEAR)
    fill_mask = np.zeros((192, 256), dtype=bool)
    fill_mask[60:130, 90:180] = True
    target = gt.copy()
    target[fill_mask] = 255
    return Image.fromarray(target), fill_mask, Image.fromarray(reference), gt


def test_recovers_a_known_homography_and_keeps_the_known_region(synthetic_pair):
    target, fill_mask, reference, gt = synthetic_pair
    result = geometry.warp_fill(target, fill_mask, [("ref.png", reference)], make_matcher("sift"))
    (alignment,) = result.alignments
    assert alignment.error is None and alignment.matches >= 50
    plane = alignment.planes[0]
    assert plane.error_px < 1.0
    # the fitted homography moves the hole's pixels to where the true one does, within 1 px
    ys, xs = np.nonzero(fill_mask)
    points = np.stack([xs, ys, np.ones_like(xs)], axis=1).astype(np.float64)
    back_true = points @ np.linalg.inv(TRUE_H).T
    back_fit = points @ np.linalg.inv(plane.matrix).T
    offset = back_true[:, :2] / back_true[:, 2:] - back_fit[:, :2] / back_fit[:, 2:]
    assert np.abs(offset).max() < 1.0

    out = np.asarray(result.image)
    untouched = feather(fill_mask, FEATHER_RADIUS) == 0
    assert np.array_equal(out[untouched], np.asarray(target)[untouched])
    assert result.covered[fill_mask].all() and result.fallback_share == 0.0
    error = np.abs(out[fill_mask].astype(int) - gt[fill_mask]).mean()
    assert error < 6.0  # the hole is the reference's content (up to interpolation)


def test_a_reference_with_no_matches_is_reported_not_fatal(synthetic_pair):
    target, fill_mask, reference, _ = synthetic_pair
    flat = Image.new("RGB", (200, 150), (90, 120, 60))  # no features at all
    result = geometry.warp_fill(
        target, fill_mask, [("flat.png", flat), ("ref.png", reference)], make_matcher("sift")
    )
    flat_report, ref_report = result.references
    assert flat_report["error"] and "correspondences" in flat_report["error"]
    assert flat_report["matches"] < geometry.MIN_INLIERS and flat_report["homographies"] == []
    assert ref_report["error"] is None and ref_report["hole_used"] == 1.0

    only_flat = geometry.warp_fill(target, fill_mask, [("flat.png", flat)], make_matcher("sift"))
    assert only_flat.fallback_share == 1.0  # inpainted, still a complete image
    assert not (np.asarray(only_flat.image)[fill_mask] == 255).all()


def test_parallax_scene_needs_more_than_one_homography():
    """On the parallax example scene the references' matches need a second plane, and the
    warp fill with several planes is closer to the ground truth than with one."""
    scene = load_scene(DATA / "Custom" / "4")
    references = list(zip([p.name for p in scene.reference_paths], scene.references, strict=True))
    matcher = make_matcher("sift")
    several = geometry.warp_fill(scene.target, scene.fill_mask, references, matcher)
    single = geometry.warp_fill(
        scene.target, scene.fill_mask, references, matcher, max_homographies=1
    )
    assert any(len(a.planes) >= 2 for a in several.alignments)
    gt = np.asarray(scene.gt, dtype=np.float64)

    def hole_error(result):
        return np.abs(np.asarray(result.image, dtype=np.float64) - gt)[scene.fill_mask].mean()

    assert hole_error(several) < hole_error(single)


def test_script_writes_results_and_report(tmp_path, capsys):
    out = tmp_path / "Custom-5-results-warp"
    assert (
        warp_fill.main(["--scene_dir", str(DATA / "Custom" / "5"), "--output_dir", str(out)]) == 0
    )
    visible = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    assert visible == ["0.png", "uncertainty.png", "warp_fill.json"]
    report = json.loads((out / "warp_fill.json").read_text())
    uncertainty = geometry.read_uncertainty(Image.open(out / "uncertainty.png"))
    assert np.isinf(uncertainty[load_scene(DATA / "Custom" / "5").fill_mask]).all()  # unseen
    assert report["schema_version"] == 1 and report["method"] == "warp_fill"
    assert report["hole_inpainted"] == 1.0  # scene 5: no reference sees the hole
    for ref in report["references"]:
        assert set(ref) >= {"reference", "matches", "inliers", "reprojection_error_px"}
        assert ref["error"] is None and ref["homographies"] and ref["hole_seen"] == 0.0
    assert "100% inpainted" in capsys.readouterr().out
    with Image.open(out / "0.png") as image:
        assert image.size == load_scene(DATA / "Custom" / "5").target.size


@pytest.mark.parametrize(
    "case, message",
    [
        ("missing_scene", "scene folder not found"),
        ("inside_scene", "overlaps the scene"),
        ("scene_parent", "overlaps the scene"),
        ("other_results", "did not write"),
        ("user_files", "did not write"),
        ("bad_planes", "--max_homographies 0"),
    ],
)
def test_bad_input_exits_2_with_a_clear_error(tmp_path, capsys, case, message):
    import shutil

    scene = tmp_path / "scene"
    shutil.copytree(DATA / "Custom" / "2", scene)
    out = tmp_path / "Custom-2-results-warp"
    args = ["--scene_dir", str(scene), "--output_dir", str(out)]
    if case == "missing_scene":
        args[1] = str(tmp_path / "nope")
    elif case == "inside_scene":
        args[3] = str(scene / "results")
    elif case == "scene_parent":
        args[3] = str(tmp_path)
    elif case == "other_results":
        out.mkdir()
        (out / "0.png").write_bytes((scene / "target" / "gt.png").read_bytes())
    elif case == "user_files":
        out.mkdir()
        (out / "uncertainty.png").write_bytes(b"the user's own picture")
    else:
        args += ["--max_homographies", "0"]
    before = sorted(p.relative_to(scene) for p in scene.rglob("*"))
    assert warp_fill.main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
    assert sorted(p.relative_to(scene) for p in scene.rglob("*")) == before
    if case == "user_files":
        assert (out / "uncertainty.png").read_bytes() == b"the user's own picture"
        assert sorted(p.name for p in out.iterdir()) == ["uncertainty.png"]


def test_uncertainty_grows_where_the_references_disagree():
    """Parallax scene: where one plane's warp is wrong, the references disagree, so the fill's
    expected error is higher where its actual error is higher."""
    scene = load_scene(DATA / "Custom" / "4")
    references = list(zip([p.name for p in scene.reference_paths], scene.references, strict=True))
    result = geometry.warp_fill(scene.target, scene.fill_mask, references, make_matcher("sift"))
    gt = np.asarray(scene.gt, dtype=np.float64)
    error = np.abs(np.asarray(result.image, dtype=np.float64) - gt).mean(axis=-1)
    hole = scene.fill_mask & np.isfinite(result.uncertainty)
    sure = hole & (result.uncertainty <= np.median(result.uncertainty[hole]))
    unsure = hole & ~sure
    assert sure.any() and unsure.any()
    assert error[sure].mean() < error[unsure].mean()
    picture = geometry.uncertainty_image(result.uncertainty)  # round trip through the PNG
    assert np.array_equal(
        geometry.read_uncertainty(picture)[hole], np.clip(np.rint(result.uncertainty[hole]), 0, 254)
    )


def test_fuse_weighs_the_prior_by_both_uncertainties():
    rng = np.random.default_rng(0)
    height, width = 24, 32
    fill_mask = np.zeros((height, width), dtype=bool)
    fill_mask[4:20, 8:24] = True
    prior = np.full((height, width, 3), 200, dtype=np.uint8)
    prior[:, 16:] = 110  # right: near the completions
    spread = np.where(np.arange(width) < width // 2, 60.0, 2.0)[None, :, None]  # left: unsure
    completions = [
        np.clip(100 + spread * rng.standard_normal((height, width, 3)), 0, 255).astype(np.uint8)
        for _ in range(8)
    ]
    uncertainty = np.full((height, width), 5.0)
    uncertainty[:, 16:] = 40.0  # right: the prior is unsure, and agrees within that
    uncertainty[:, 12:14] = np.inf  # no estimate: the prior has no say there
    fused, weight = geometry.fuse(completions, prior, uncertainty, fill_mask)

    for before, after in zip(completions, fused, strict=True):
        assert np.array_equal(before[~fill_mask], after[~fill_mask])  # known region untouched
        assert np.array_equal(before[:, 12:14], after[:, 12:14])
    assert (weight[~fill_mask] == 0).all() and (weight[:, 12:14] == 0).all()
    # Left: unsure completions, a sure prior: the prior dominates.
    assert weight[8:16, 8:11].min() > 0.9
    assert np.abs(np.stack(fused)[:, 8:16, 8:11].astype(float) - 200).mean() < 15
    # Right: completions that agree with each other and with the prior within its uncertainty
    # keep their say.
    assert weight[8:16, 20:24].max() < 0.1
    # Completions that agree with each other but all disagree with a sure prior (a bias the
    # spread cannot show) give way to it.
    biased = [np.full((height, width, 3), 100, dtype=np.uint8) + (i % 2) for i in range(4)]
    _, weight = geometry.fuse(biased, prior, np.full((height, width), 5.0), fill_mask)
    assert weight[8:16, 8:11].min() > 0.99
    with pytest.raises(ValueError, match="at least two"):
        geometry.fuse(completions[:1], prior, uncertainty, fill_mask)


def _scene_fill(number: str, monkeypatch=None, ordering=None):
    scene = load_scene(DATA / "Custom" / number)
    if ordering is not None:
        monkeypatch.setattr(geometry, "nearer_planes", ordering)
    references = list(zip([p.name for p in scene.reference_paths], scene.references, strict=True))
    result = geometry.warp_fill(scene.target, scene.fill_mask, references, make_matcher("sift"))
    from benchmark.psnr import masked_psnr

    psnr = masked_psnr(np.asarray(scene.gt), np.asarray(result.image), scene.fill_mask)
    return result, psnr


def test_a_nearer_plane_wins_where_the_target_confirms_it(monkeypatch):
    """Parallax scene: behind the foreground's edge two references agree on the background they
    see uncovered; the occlusion order puts the foreground in front, because the target's
    known pixels confirm it, and the hole gets closer to the truth."""
    ordered, ordered_psnr = _scene_fill("4")
    assert ordered.occlusion["applied"] and ordered.occlusion["hole_share"] > 0
    check = ordered.occlusion
    assert check["known_error_ordered"] < check["known_error_unordered"]

    def unordered(candidates, best, any_valid):
        return best, np.zeros_like(any_valid), np.zeros((len(candidates), *best.shape))

    plain, plain_psnr = _scene_fill("4", monkeypatch, unordered)
    assert not plain.occlusion["applied"]
    assert ordered_psnr > plain_psnr + 1.0


def test_an_order_the_known_pixels_refute_is_not_used(monkeypatch):
    real = geometry.nearer_planes
    baseline, baseline_psnr = _scene_fill("4", monkeypatch, lambda c, b, v: (b, np.zeros_like(v),
                                          real(c, b, v)[2]))  # fmt: skip

    def reversed_order(candidates, best, any_valid):
        """The opposite choice: the main plane wherever the consensus chose a further one, and
        a further plane of the same reference wherever it chose the main one."""
        choice = best.copy()
        for i, c in enumerate(candidates):
            partner = [j for j, d in enumerate(candidates) if d.reference == c.reference and j != i]
            if partner:
                choice[best == i] = partner[0]
        return choice, choice != best, real(candidates, best, any_valid)[2]

    wrong, wrong_psnr = _scene_fill("4", monkeypatch, reversed_order)
    assert wrong.occlusion["known_pixels_checked"] >= geometry.MIN_ORDER_EVIDENCE
    assert not wrong.occlusion["applied"]  # refuted by the target's own pixels
    assert wrong_psnr == baseline_psnr


def test_plausibility_judges_zoom_in_frames_not_pixels():
    """A reference 12x smaller per side than the target, framing the same view, is plausible;
    the same mapping between images of one size is a 12x zoom, and is not."""
    zoom = np.diag([12.0, 12.0, 1.0])
    assert geometry.implausible(zoom, (256, 170), (3072, 2040)) is None
    assert "144 times the target's frame" in geometry.implausible(zoom, (256, 170), (256, 170))
    assert geometry.implausible(np.eye(3), (256, 170), (256, 170)) is None
    beyond = np.array([[1.0, 0, 0], [0, 1.0, 0], [-0.01, 0, 1.0]])  # x = 100 goes to infinity
    assert "infinity" in geometry.implausible(beyond, (256, 170), (256, 170))
