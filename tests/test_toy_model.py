"""The committed toy base model is an ordinary diffusers folder with SD2's tokenizer, small
enough to commit, trained on photos the example scenes do not use; its script runs."""

from __future__ import annotations

import json

import pytest

import realfill_utils as ru
import train_toy_model as ttm
from make_example_scenes import PHOTOS, RESERVED

MAX_MEGABYTES = 25  # what the project commits for its offline default


def folder_megabytes(path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6


def test_committed_toy_model_loads_through_from_pretrained_with_the_full_tokenizer():
    import open_clip

    components = ru.load_components(ru.TOY_MODEL)
    assert len(components.tokenizer) == 49408
    # token ids agree with open_clip's own CLIP tokenizer, an independent implementation
    expected = open_clip.tokenizer.SimpleTokenizer().encode(ru.PROMPT)
    assert components.tokenizer(ru.PROMPT, add_special_tokens=False).input_ids == expected
    assert components.unet.config.in_channels == 9
    assert folder_megabytes(ru.TOY_MODEL) <= MAX_MEGABYTES


def test_toy_model_record_says_how_it_was_made():
    record = json.loads((ru.TOY_MODEL / ttm.RECORD_FILE).read_text())
    assert record["command"].startswith("python train_toy_model.py")
    assert record["total_seconds"] > 0 and record["vae_psnr_db_mean"] > 0
    components = ru.load_components(ru.TOY_MODEL)
    assert record["resolution"] % components.size_multiple == 0
    assert record["vae_downsampling_factor"] == components.vae_scale_factor


def test_training_photos_are_not_the_example_scenes_photos():
    trained_on = {file for _, file, *_ in RESERVED}
    assert trained_on and trained_on.isdisjoint(p.file for p in PHOTOS.values())
    heldout = [name for name, _ in ttm.heldout_images(ttm.RESOLUTION)]
    assert heldout and all(name.startswith("data/Custom/") for name in heldout)
    assert not any(name.endswith(("mask.png", "target.png")) for name in heldout)


def test_photo_crops_are_images_in_range():
    import torch

    crops = ttm.PhotoCrops(32).sample(8, torch.Generator().manual_seed(0))
    assert crops.shape == (8, 3, 32, 32)
    assert crops.min() >= -1 and crops.max() <= 1 and crops.std() > 0.05


@pytest.mark.parametrize("steps", [2])
def test_training_script_writes_a_loadable_pipeline_atomically(tmp_path, steps):
    out = tmp_path / "toy"
    ttm.main(["--vae_steps", str(steps), "--unet_steps", str(steps), "--output_dir", str(out)])
    components = ru.load_components(out)
    assert len(components.tokenizer) == 49408
    record = json.loads((out / ttm.RECORD_FILE).read_text())
    assert record["vae_steps"] == steps and record["unet_steps"] == steps
    # the VAE's latent scale was measured, not left at the config default
    assert components.vae.config.scaling_factor == pytest.approx(
        record["vae_scaling_factor"], abs=1e-5
    )
    assert components.vae.config.scaling_factor != 0.18215
    # nothing but the finished folder is left beside it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["toy"]
