"""Scene loading, mask reading, compositing and atomic writes (realfill_utils)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import make_scene
from PIL import Image

import realfill_utils as ru


def _mask_array(h=20, w=30):
    mask = np.zeros((h, w), dtype=np.uint8)
    mask[5:12, 8:20] = 255
    return mask


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "P", "1", "I;16", "LA"])
def test_masks_of_every_mode_binarise_to_the_same_fill(tmp_path, mode):
    mask = _mask_array()
    image = Image.fromarray(mask)
    if mode == "I;16":
        image = Image.fromarray(mask.astype(np.uint16) * 257)
    elif mode != "L":
        image = image.convert(mode)
    path = tmp_path / f"mask-{mode.replace(';', '')}.png"
    image.save(path)
    np.testing.assert_array_equal(ru.load_mask(path), mask > 0)


def test_rgba_mask_carried_in_alpha(tmp_path):
    mask = _mask_array()
    rgba = np.zeros((*mask.shape, 4), dtype=np.uint8)
    rgba[..., 3] = mask  # black everywhere, the fill region opaque
    Image.fromarray(rgba, "RGBA").save(tmp_path / "m.png")
    np.testing.assert_array_equal(ru.load_mask(tmp_path / "m.png"), mask > 0)


def test_load_image_applies_exif_rotation_and_drops_alpha(tmp_path):
    array = np.zeros((10, 20, 3), dtype=np.uint8)
    array[:, :5] = 255
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    Image.fromarray(array).save(tmp_path / "r.jpg", exif=exif, quality=95)
    image = ru.load_image(tmp_path / "r.jpg")
    assert image.size == (10, 20) and image.mode == "RGB"
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)  # fully transparent -> white background
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    assert np.asarray(ru.load_image(tmp_path / "a.png")).min() == 255


def test_16bit_image_is_scaled_not_clipped(tmp_path):
    Image.fromarray(np.full((4, 4), 32768, dtype=np.uint16)).save(tmp_path / "g.png")
    assert np.asarray(ru.load_image(tmp_path / "g.png"))[0, 0, 0] == 128


def test_scene_ignores_hidden_and_non_images_with_one_notice(scene_dir, capsys):
    (scene_dir / "ref" / ".DS_Store").write_bytes(b"\0\1")
    (scene_dir / "ref" / ".ipynb_checkpoints").mkdir()
    (scene_dir / "ref" / "notes.txt").write_text("hi")
    Image.new("RGB", (30, 20), "red").save(scene_dir / "ref" / "extra.webp")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        scene = ru.load_scene(scene_dir)
    # One plain line on stderr, not a Python warning with file and line (was a UserWarning).
    assert not caught
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("note: ") and "ignoring 3" in err
    assert "notes.txt" in err and "Warning" not in err
    assert [p.name for p in scene.reference_paths] == ["0.png", "1.jpg", "2.png", "extra.webp"]
    assert scene.fill_mask.dtype == bool and scene.fill_mask.sum() == 24 * 20
    assert scene.gt is not None and scene.target.size == (48, 40)


def _broken(scene_dir, what):
    target = scene_dir / "target"
    if what == "no references":
        for p in (scene_dir / "ref").iterdir():
            p.unlink()
    elif what == "missing target":
        (target / "target.png").unlink()
    elif what == "missing mask":
        (target / "mask.png").unlink()
    elif what == "mask size":
        Image.new("L", (40, 40), 255).save(target / "mask.png")
    elif what == "corrupt image":
        (scene_dir / "ref" / "0.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    elif what == "empty mask":
        Image.new("L", (48, 40), 0).save(target / "mask.png")
    elif what == "full mask":
        Image.new("L", (48, 40), 255).save(target / "mask.png")
    elif what == "gt size":
        Image.new("RGB", (10, 10)).save(target / "gt.png")


@pytest.mark.parametrize(
    "what, expected",
    [
        ("no references", "no reference images"),
        ("missing target", "target.png: missing"),
        ("missing mask", "mask.png: missing"),
        ("mask size", "masks must match the target size"),
        ("corrupt image", "0.png: cannot read this image"),
        ("empty mask", "no fill pixels"),
        ("full mask", "nothing of the target is known"),
        ("gt size", "ground truth must match"),
    ],
)
def test_bad_scenes_raise_clear_errors(scene_dir, what, expected):
    _broken(scene_dir, what)
    with pytest.raises(ru.SceneError, match=expected):
        ru.load_scene(scene_dir)


def test_output_dir_not_writable(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ru.SceneError, match="not writable"):
        ru.check_output_dir(tmp_path / "file" / "out")


def test_composite_keeps_known_pixels_outside_the_feather_band(tmp_path):
    scene = ru.load_scene(make_scene(tmp_path / "s", size=(45, 31), hole=(10, 8, 30, 20)))
    generated = Image.fromarray(np.random.default_rng(0).integers(0, 256, (16, 24, 3), np.uint8))
    out = ru.composite(generated, scene.target, scene.fill_mask, radius=3)
    assert out.size == scene.target.size
    alpha = ru.feather(scene.fill_mask, 3)
    outside = alpha == 0
    target, result = np.asarray(scene.target), np.asarray(out)
    np.testing.assert_array_equal(result[outside], target[outside])
    assert (alpha[scene.fill_mask] == 1).all()
    assert alpha[(alpha > 0) & ~scene.fill_mask].size > 0  # a real band exists
    from scipy.ndimage import distance_transform_edt

    assert distance_transform_edt(~scene.fill_mask)[alpha > 0].max() < 3 + 1


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    with pytest.raises(RuntimeError), ru.atomic_path(tmp_path / "x.json") as tmp:
        tmp.write_text("half")
        raise RuntimeError
    assert list(tmp_path.iterdir()) == []
    ru.atomic_write_json({"a": 1}, tmp_path / "x.json")
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_model_size_keeps_aspect_and_multiples():
    assert ru.model_size((512, 512), 512, 64) == (512, 512)
    width, height = ru.model_size((768, 512), 512, 64)
    assert (width % 64, height % 64) == (0, 0) and height == 512 and width == 768
    assert ru.model_size((45, 31), 64, 4) == (92, 64)


def test_uncached_hub_id_fails_fast_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ru.SceneError, match="unavailable"):
        ru.resolve_model_path("nobody/not-a-cached-model")


def test_broken_tokenizer_is_caught(tiny_model, tmp_path):
    import shutil

    copy = tmp_path / "model"
    shutil.copytree(tiny_model, copy)
    for name in ("vocab.json", "merges.txt", "tokenizer.json"):
        (copy / "tokenizer" / name).unlink(missing_ok=True)
    with pytest.raises((ru.SceneError, OSError, ValueError, TypeError)):
        ru.load_components(copy)


def test_tiny_model_has_the_full_sd2_vocabulary(tiny_model):
    components = ru.load_components(tiny_model)
    assert len(components.tokenizer) == 49408
    assert components.tokenizer("a photo of sks").input_ids == [49406, 320, 1125, 539, 48136, 49407]
    assert components.tokenizer.pad_token_id == 0
    assert components.unet.config.in_channels == 9


def test_atomic_writes_get_ordinary_permissions(tmp_path):
    import os

    umask = os.umask(0o022)
    try:
        ru.atomic_write_json({}, tmp_path / "a.json")
    finally:
        os.umask(umask)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644


def test_lora_file_follows_the_umask(tmp_path):
    """safetensors writes a private file of its own: the LoRA must still follow the umask."""
    import os

    import torch
    from safetensors.torch import save_file

    umask = os.umask(0o022)
    try:
        with ru.atomic_path(tmp_path / ru.LORA_FILE) as tmp:
            save_file({"w": torch.zeros(2)}, str(tmp))  # as diffusers' save_lora_weights does
    finally:
        os.umask(umask)
    assert (tmp_path / ru.LORA_FILE).stat().st_mode & 0o777 == 0o644


def test_ref_of_only_junk_names_what_it_skipped(scene_dir):
    for p in (scene_dir / "ref").iterdir():
        p.unlink()
    (scene_dir / "ref" / "notes.txt").write_text("hi")
    (scene_dir / "ref" / "photo.heic").write_bytes(b"\0")
    with pytest.raises(ru.SceneError, match=r"no reference images found \(skipped: notes.txt, "):
        ru.load_scene(scene_dir)


def test_output_folder_with_user_files_is_refused_and_they_survive(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "1.png").write_bytes(b"the user's photo")
    with pytest.raises(ru.SceneError, match=r"out holds 1 entry that infer.py did not write \(1"):
        ru.claim_output_dir(out, "infer.py", ["0.png", "1.png"])
    assert (out / "1.png").read_bytes() == b"the user's photo"
    assert not (out / ru.MANIFEST_FILE).exists()
    # What a run recorded as its own it may replace later; another script's folder is refused.
    fresh = ru.claim_output_dir(tmp_path / "fresh", "infer.py", ["0.png"])
    (fresh / "0.png").write_bytes(b"completion")
    assert ru.claim_output_dir(fresh, "infer.py", ["0.png", "1.png"]) == fresh
    assert ru.owned_entries(fresh) == {"0.png", "1.png"}
    with pytest.raises(ru.SceneError, match="holds the outputs of infer.py"):
        ru.claim_output_dir(fresh, "train_realfill.py", ["logs"])


def test_output_folder_may_not_overlap_an_input(scene_dir):
    for out in (scene_dir / "ref", scene_dir, scene_dir.parent):
        with pytest.raises(ru.SceneError, match="overlaps the scene"):
            ru.claim_output_dir(out, "infer.py", ["0.png"], {"the scene": scene_dir})
    assert not (scene_dir / "ref" / ru.MANIFEST_FILE).exists()


def test_a_second_run_into_a_locked_folder_is_refused(tmp_path):
    with (
        ru.output_lock(tmp_path, "infer.py"),
        pytest.raises(ru.SceneError, match="another infer.py run is writing"),
        ru.output_lock(tmp_path, "infer.py"),
    ):
        pass
    with ru.output_lock(tmp_path, "infer.py"):  # released: free again
        pass


class _StageBroke(RuntimeError):
    pass


def _raise(err):
    def body():
        raise err

    return body


@pytest.mark.parametrize(
    "body, code, message",
    [
        (lambda: None, ru.EXIT_OK, ""),
        (lambda: {"written": []}, ru.EXIT_OK, ""),  # a record is not an exit status
        (lambda: ru.EXIT_FAILED, ru.EXIT_FAILED, ""),
        (_raise(ru.SceneError("mask.png: not found")), ru.EXIT_INPUT, "error: mask.png: not found"),
        (_raise(_StageBroke("infer")), ru.EXIT_FAILED, "stage failed: infer"),
        (_raise(KeyboardInterrupt()), ru.EXIT_INTERRUPTED, "interrupted: 3 done"),
    ],
)
def test_run_main_maps_each_ending_to_one_exit_status(body, code, message, capsys):
    done = [1, 2, 3]
    status = ru.run_main(
        body,
        interrupted=lambda: f"interrupted: {len(done)} done",
        failed={_StageBroke: "stage failed: {err}"},
    )
    assert status == code
    assert capsys.readouterr().err.strip() == message


def test_run_main_lets_other_errors_through():
    with pytest.raises(ZeroDivisionError):
        ru.run_main(lambda: 1 / 0, failed={_StageBroke: "{err}"})


def test_replace_between_markers_rewrites_only_between_them(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text("intro\n<!-- b -->\nold table\n<!-- e -->\noutro\n")
    assert ru.replace_between_markers(doc, "<!-- b -->", "<!-- e -->", "new | table\n")
    assert doc.read_text() == "intro\n<!-- b -->\nnew | table\n<!-- e -->\noutro\n"
    lacking = tmp_path / "other.md"
    lacking.write_text("no markers here\n")
    assert not ru.replace_between_markers(lacking, "<!-- b -->", "<!-- e -->", "x")
    assert lacking.read_text() == "no markers here\n"
    assert not ru.replace_between_markers(tmp_path / "missing.md", "<!-- b -->", "<!-- e -->", "x")


def test_a_folder_written_before_outputs_were_recorded_is_adopted_only_if_all_its_own(tmp_path):
    def fill(folder: Path, *names: str) -> Path:
        folder.mkdir(parents=True)
        for name in names:
            (folder / name).write_text(name)
        return folder

    ours = {"0.png", "report.json"}.__contains__
    old = fill(tmp_path / "old", "0.png", "report.json")
    ru.adopt_earlier_output(old, "x.py", "report.json", ours)
    assert ru.claim_output_dir(old, "x.py", ["0.png", "report.json"]) == old  # adopted
    for name, files in (("mixed", ["0.png", "report.json", "notes.txt"]), ("unsigned", ["0.png"])):
        folder = fill(tmp_path / name, *files)
        ru.adopt_earlier_output(folder, "x.py", "report.json", ours)
        assert not (folder / ru.MANIFEST_FILE).exists()
        with pytest.raises(ru.SceneError, match="did not write"):
            ru.claim_output_dir(folder, "x.py", ["0.png", "report.json"])
        assert sorted(p.name for p in folder.iterdir()) == sorted(files)  # nothing touched
    scene = fill(tmp_path / "scene", "0.png", "report.json")  # a folder that is an input
    ru.adopt_earlier_output(scene, "x.py", "report.json", ours, {"the scene": scene})
    assert not (scene / ru.MANIFEST_FILE).exists()


def test_an_image_too_large_to_decode_is_named_with_its_size(tmp_path, monkeypatch):
    path = tmp_path / "huge.png"
    Image.new("RGB", (120, 100)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 2000)  # PIL refuses twice this: 4,000 px
    with pytest.raises(ru.SceneError, match=r"huge.png: 120x100 pixels .* downscale it"):
        ru.load_image(path)
    assert ru.image_size(path) == (120, 100)  # the header is still read


def test_a_mask_drawn_on_a_target_turned_by_exif_is_explained(tmp_path):
    scene = make_scene(tmp_path / "scene")
    target = Image.open(scene / "target" / "target.png").convert("RGB")
    mask = Image.open(scene / "target" / "mask.png")
    exif = Image.Exif()
    exif[ru.ORIENTATION_TAG] = 6  # stored turned: shown rotated by 90 degrees
    target.transpose(Image.Transpose.ROTATE_90).save(scene / "target" / "target.png", exif=exif)
    mask.transpose(Image.Transpose.ROTATE_90).save(scene / "target" / "mask.png")  # as stored
    assert ru.image_size(scene / "target" / "target.png") == target.size
    with pytest.raises(ru.SceneError, match=r"EXIF rotation \(orientation 6\)"):
        ru.load_scene(scene)


def test_flags_for_another_script_with_an_unclosed_quote_are_refused_at_parsing():
    import argparse

    assert ru.shell_words('--report_to none --prompt "a b"') == '--report_to none --prompt "a b"'
    with pytest.raises(argparse.ArgumentTypeError, match="No closing quotation"):
        ru.shell_words('"x')
