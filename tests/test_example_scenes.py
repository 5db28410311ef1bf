"""The committed example scenes in data/: reproducible byte for byte, valid RealBench scenes
that cover both tasks, with references that are other views of the hole's content."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import make_example_scenes as mes
from realfill_utils import load_scene

DATA = Path(__file__).resolve().parents[1] / "data"
MANIFEST = json.loads((DATA / "scenes.json").read_text())
SCENES = {scene["scene"]: scene for scene in MANIFEST["scenes"]}


@pytest.fixture(scope="module")
def regenerated(tmp_path_factory) -> tuple[Path, list[Path]]:
    out = tmp_path_factory.mktemp("regenerated")
    return out, mes.generate(out)


def test_regeneration_reproduces_committed_files_byte_for_byte(regenerated):
    out, files = regenerated
    assert mes.compare(out, DATA, files) == []
    assert {f.parts[0] for f in files} == {"scenes.json", "README.md", "LICENSES.md", "Custom"}


def test_check_mode_names_a_changed_pixel_and_an_extra_file(regenerated, tmp_path, capsys):
    out, _ = regenerated
    copy = tmp_path / "data"
    shutil.copytree(out, copy)
    assert mes.main(["--output_dir", str(copy), "--check"]) == 0

    gt_path = copy / "Custom" / "1" / "target" / "gt.png"
    gt = np.asarray(Image.open(gt_path)).copy()
    gt[5, 7] = 255 - gt[5, 7]
    Image.fromarray(gt).save(gt_path)
    (copy / "Custom" / "1" / "ref" / "stray.png").write_bytes(b"")
    assert mes.main(["--output_dir", str(copy), "--check"]) == 1
    err = capsys.readouterr().err
    assert f"{gt_path}: differs (1 pixels differ" in err
    assert "stray.png: not made by this script" in err


def test_both_realbench_tasks_and_small_size():
    assert {scene["task"] for scene in SCENES.values()} == {"outpainting", "inpainting"}
    total = sum(p.stat().st_size for p in DATA.rglob("*") if p.is_file())
    assert total < 2_000_000


def test_no_photo_is_both_used_and_reserved():
    used = {scene["photo"] for scene in SCENES.values()}
    assert used <= set(mes.PHOTOS)
    assert not used & {name for name, *_ in mes.RESERVED}
    licences = (DATA / "LICENSES.md").read_text()
    for name in used | {name for name, *_ in mes.RESERVED}:
        assert f"`{name}`" in licences


@pytest.mark.parametrize("name", sorted(SCENES))
def test_scene_is_a_valid_realbench_scene(name):
    info = SCENES[name]
    scene = load_scene(DATA / name)
    assert scene.gt is not None and not scene.ignored
    assert scene.target.size == tuple(info["target_size"]) and max(scene.target.size) == 256
    assert [p.relative_to(DATA / name).as_posix() for p in scene.reference_paths] == [
        r["file"] for r in info["references"]
    ]
    assert {p.suffix for p in scene.reference_paths} == {".png", ".jpg"} or len(
        scene.reference_paths
    ) < 3

    mask = np.asarray(Image.open(DATA / name / "target" / "mask.png"))
    assert mask.ndim == 2 and set(np.unique(mask)) == {0, 255}
    fill = scene.fill_mask
    target, gt = np.asarray(scene.target), np.asarray(scene.gt)
    assert np.array_equal(target[~fill], gt[~fill])  # known region is the ground truth
    assert (target[fill] == 255).all()  # the hole is white
    assert abs(fill.mean() - info["hole_fraction"]) < 1e-3

    touches_border = fill[0].any() or fill[-1].any() or fill[:, 0].any() or fill[:, -1].any()
    assert touches_border == (info["task"] == "outpainting")


def hole_correlation(info: dict, ref: dict, image: Image.Image, gt: np.ndarray, fill, shift=0.0):
    """Correlate the ground truth's hole with the reference pixels that scenes.json maps onto it
    (nearest reference pixel; `shift` moves the mapping right by that many photo pixels)."""
    height, width = gt.shape
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    px, py = mes.apply(info["target"]["homography"], x, y)
    rx, ry = mes.apply(mes.invert(ref["homography"]), px + shift, py)
    rw, rh = image.size
    seen = fill & (rx >= 0) & (rx <= rw - 1) & (ry >= 0) & (ry <= rh - 1)
    luma = np.asarray(image, dtype=np.float64).mean(axis=-1)
    sampled = luma[np.rint(ry[seen]).astype(int), np.rint(rx[seen]).astype(int)]
    return seen.sum() / fill.sum(), np.corrcoef(sampled, gt[seen])[0, 1]


FLAT_SEEN = sorted(
    n for n, s in SCENES.items() if "layer" not in s and s["hole_seen_by_references"] > 0
)
PARALLAX = sorted(n for n, s in SCENES.items() if "layer" in s)
UNSEEN = sorted(n for n, s in SCENES.items() if s["hole_seen_by_references"] == 0)


def test_a_parallax_scene_and_an_unseen_hole_scene_exist():
    assert PARALLAX and UNSEEN
    for name in UNSEEN:  # the references overlap the known region, never the hole
        assert all(
            r["hole_seen"] == 0 and r["target_seen"] > 0.3 for r in SCENES[name]["references"]
        )


def layer_correspondences(info: dict, ref: dict, step: int = 4):
    """Target pixels (x, y) on the background and on the layer, and where each really is in
    the reference, from scenes.json (the layer moves by the views' layer_shift)."""
    spec = next(
        s for s in mes.scene_specs(MANIFEST["seed"]) if f"Custom/{s.number}" == info["scene"]
    )
    width, height = info["target_size"]
    y, x = np.mgrid[0:height:step, 0:width:step].astype(np.float64)
    px, py = mes.apply(info["target"]["homography"], x, y)
    on_layer = spec.layer.covers(*spec.layer.to_layer(px, py, info["photo_size"], (0.0, 0.0)))
    shift = ref["layer_shift"]
    shifted = (px + np.where(on_layer, shift[0], 0.0), py + np.where(on_layer, shift[1], 0.0))
    # where the reference shows the layer at the background's place, the background is hidden
    rx, ry = mes.apply(mes.invert(ref["homography"]), *shifted)
    target_xy = np.stack([x.ravel(), y.ravel()], axis=1)
    return target_xy, np.stack([rx.ravel(), ry.ravel()], axis=1), on_layer.ravel()


@pytest.mark.parametrize("name", PARALLAX)
def test_parallax_scene_is_not_one_homography(name):
    """Fitted to the true correspondences of background and layer together, one homography
    leaves the layer several pixels off in every reference: no single warp explains the hole."""
    import cv2

    info = SCENES[name]
    hole_on_layer = info["layer"]["hole_on_layer"]
    assert 0.2 < hole_on_layer < 0.8  # the hole holds both the layer and the background
    for ref in info["references"]:
        target_xy, ref_xy, on_layer = layer_correspondences(info, ref)
        assert 0.02 < on_layer.mean() < 0.3
        matrix, _ = cv2.findHomography(target_xy, ref_xy, 0)
        mapped = cv2.perspectiveTransform(target_xy[None], matrix)[0]
        residual = np.linalg.norm(mapped - ref_xy, axis=1)
        assert np.median(residual[on_layer]) > 5.0, ref["file"]
        assert np.hypot(*ref["layer_shift"]) > 10.0


@pytest.mark.parametrize("name", FLAT_SEEN)
def test_references_are_other_views_that_see_the_hole(name):
    """No reference copies the target; mapped through scenes.json's homographies, each one
    shows the ground truth's hole content (up to its own exposure and JPEG loss), and a
    mapping 8 px off does not."""
    info = SCENES[name]
    scene = load_scene(DATA / name)
    gt = np.asarray(scene.gt, dtype=np.float64).mean(axis=-1)
    for ref, image in zip(info["references"], scene.references, strict=True):
        resized = np.asarray(image.resize(scene.target.size), dtype=np.float64).mean(axis=-1)
        assert np.abs(resized - gt).mean() > 10  # another view, not a copy

        seen, correlation = hole_correlation(info, ref, image, gt, scene.fill_mask)
        assert abs(seen - ref["hole_seen"]) < 0.02
        assert correlation > 0.95
        _, off = hole_correlation(info, ref, image, gt, scene.fill_mask, shift=8.0)
        assert off < 0.95


def test_check_of_a_missing_folder_is_bad_input(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        mes.main(["--output_dir", str(tmp_path / "missing"), "--check"])
    assert exit_info.value.code == 2
    assert "no such folder" in capsys.readouterr().err


def test_writing_never_replaces_a_users_files(regenerated, tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "README.md").write_text("my notes")
    assert mes.main(["--output_dir", str(mine)]) == 2
    assert (mine / "README.md").read_text() == "my notes"
    ours = tmp_path / "ours"
    shutil.copytree(regenerated[0], ours)
    (ours / "Custom" / "1" / "mynotes.txt").write_text("keep me")
    assert mes.main(["--output_dir", str(ours)]) == 2
    assert (ours / "Custom" / "1" / "mynotes.txt").read_text() == "keep me"
    assert "mynotes.txt" in capsys.readouterr().err


def test_a_difference_is_described_by_what_changed(tmp_path):
    expected, same, longer, other = (tmp_path / f"{n}.png" for n in ("e", "s", "l", "o"))
    Image.new("RGB", (8, 6), (10, 20, 30)).save(expected)
    same.write_bytes(expected.read_bytes())
    longer.write_bytes(expected.read_bytes() + b"appended")
    Image.new("RGB", (8, 6), (10, 20, 31)).save(other)
    assert "bytes added" in mes.pixel_note(expected, longer)
    assert "48 pixels differ, by up to 1" in mes.pixel_note(expected, other)
    Image.new("RGB", (8, 6), (10, 20, 30)).save(same, compress_level=0)  # another encoding
    assert "other encoding" in mes.pixel_note(expected, same)
