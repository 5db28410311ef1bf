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


def test_dead_leaves_images_are_varied_and_in_range():
    import torch

    data = ttm.TrainingImages(32)
    batch = data.sample(8, torch.Generator().manual_seed(0))
    assert batch.shape == (8, 3, 32, 32)
    assert batch.min() >= -1 and batch.max() <= 1
    per_image = batch.flatten(1)
    assert (per_image.std(1) > 0.02).all()  # no flat images
    assert per_image.mean(1).std() > 0.05  # images differ in colour from each other


def test_latent_normalisation_is_folded_into_the_vae_without_changing_it():
    import torch
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(**ttm.VAE_CONFIG).eval()
    data = ttm.TrainingImages(32)
    images = data.sample(4, torch.Generator().manual_seed(1))
    with torch.no_grad():
        before = vae.decode(vae.encode(images).latent_dist.mode()).sample
        ttm.normalise_latents(vae, data, torch.Generator().manual_seed(2))
        latents = torch.cat(
            [vae.encode(data.sample(32, torch.Generator().manual_seed(i))).latent_dist.sample()
             for i in range(4)]
        )  # fmt: skip
        after = vae.decode(vae.encode(images).latent_dist.mode()).sample
    assert vae.config.scaling_factor == 1.0
    assert torch.allclose(before, after, atol=1e-4)  # same autoencoder, other latent units
    # the latents that training sees (posterior samples) are centred, unit variance per channel
    assert latents.mean((0, 2, 3)).abs().max() < 0.3
    assert ((latents.std((0, 2, 3)) - 1).abs() < 0.3).all()


def test_committed_toy_model_uses_a_schedule_that_hides_the_mean_colour():
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler.from_pretrained(ru.TOY_MODEL, subfolder="scheduler")
    assert scheduler.config.prediction_type == "v_prediction"
    assert scheduler.alphas_cumprod[-1] < 1e-6  # zero terminal SNR: t = 999 is pure noise
    record = json.loads((ru.TOY_MODEL / ttm.RECORD_FILE).read_text())
    probe = record["colour_swap_probe"]["999"]
    assert probe["psnr_to_truth_db"] > probe["psnr_to_swapped_db"]  # colour from the known part


STEPS = {"--vae_steps": 1, "--decoder_steps": 2, "--unet_steps": 1}  # the smoke run's
STEP_FLAGS = [str(x) for flag_value in STEPS.items() for x in flag_value]


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """One short training run from random weights, measured, shared by the tests below."""
    root = tmp_path_factory.mktemp("toy-smoke")
    code = ttm.main([*STEP_FLAGS, "--output_dir", str(root / "toy"),
                     "--checkpoint_dir", str(root / "checkpoints")])  # fmt: skip
    return code, root


def test_training_script_writes_a_loadable_pipeline_atomically(smoke_run):
    code, root = smoke_run
    assert code == 0
    # nothing but the finished folder is left beside it: the checkpoint is removed when done
    assert sorted(p.name for p in root.iterdir()) == ["toy"]
    out = root / "toy"
    components = ru.load_components(out)
    assert len(components.tokenizer) == 49408
    record = json.loads((out / ttm.RECORD_FILE).read_text())
    assert [record[flag[2:]] for flag in STEPS] == list(STEPS.values())
    assert len(record["runs"]) == 1
    assert components.vae.config.scaling_factor == record["vae_scaling_factor"] == 1.0
    assert components.scheduler_config["prediction_type"] == "v_prediction"
    for key in ("colour_swap_probe", "small_hole_inpainting", "vae_colour_error_levels_rgb"):
        assert key in record


def test_continuing_a_trained_folder_refines_the_decoder_and_keeps_the_latents(smoke_run, tmp_path):
    """--init_from with --unet_steps 0: only the decoder moves, so the encoder's latents (what
    the UNet was trained on) and the UNet stay exactly as they were; the record keeps the
    parent's runs and adds this one."""
    import torch

    parent, child = smoke_run[1] / "toy", tmp_path / "child"
    code = ttm.main(["--init_from", str(parent), "--decoder_steps", "3", "--unet_steps", "0",
                     "--output_dir", str(child), "--checkpoint_dir", str(tmp_path / "checkpoints"),
                     "--skip_measurements"])  # fmt: skip
    assert code == 0
    before, after = ru.load_components(parent), ru.load_components(child)
    image = ttm.TrainingImages(32).sample(2, torch.Generator().manual_seed(0))
    with torch.no_grad():
        latents = [c.vae.encode(image).latent_dist.mode() for c in (before, after)]
    assert torch.equal(*latents)
    for name, weight in before.unet.state_dict().items():
        assert torch.equal(weight, after.unet.state_dict()[name]), name
    decoders = before.vae.decoder.state_dict(), after.vae.decoder.state_dict()
    assert any(not torch.equal(decoders[0][k], decoders[1][k]) for k in decoders[0])
    parent_record = json.loads((parent / ttm.RECORD_FILE).read_text())
    record = json.loads((child / ttm.RECORD_FILE).read_text())
    assert [r["command"] for r in record["runs"][:1]] == [parent_record["command"]]
    assert len(record["runs"]) == 2 and "--init_from" in record["runs"][1]["command"]
    assert record["decoder_steps"] == parent_record["decoder_steps"] + 3
    assert record["unet_steps"] == parent_record["unet_steps"]
    assert record["vae_steps"] == parent_record["vae_steps"]


def test_interrupted_training_resumes_to_the_same_weights(smoke_run, tmp_path, monkeypatch):
    """Killed in the decoder stage (after a checkpoint) and again at the UNet stage's start,
    then started again: the same weights as the smoke run, never interrupted."""
    import torch

    assert STEPS["--decoder_steps"] >= 2  # a checkpoint inside the stage, then the stop
    monkeypatch.setattr(ttm, "CHECKPOINT_EVERY", 1)

    def stop_at(stage: str, call: int):
        real = getattr(ttm, f"{stage}_loss_fn")

        def loss_fn(*args):
            loss, calls = real(*args), []

            def counted():
                calls.append(1)
                if len(calls) == call:
                    raise KeyboardInterrupt
                return loss()

            return counted

        return loss_fn

    argv = [*STEP_FLAGS, "--skip_measurements", "--output_dir", str(tmp_path / "resumed"),
            "--checkpoint_dir", str(tmp_path / "checkpoints")]  # fmt: skip
    for stage, call in (("decoder", 2), ("unet", 1)):
        with monkeypatch.context() as patch:
            patch.setattr(ttm, f"{stage}_loss_fn", stop_at(stage, call))
            assert ttm.main(argv) == ru.EXIT_INTERRUPTED
        assert not (tmp_path / "resumed").exists()
    assert ttm.main(argv) == 0
    whole = ru.load_components(smoke_run[1] / "toy")
    again = ru.load_components(tmp_path / "resumed")
    for model in ("vae", "unet"):
        first, second = getattr(whole, model).state_dict(), getattr(again, model).state_dict()
        for name, weight in first.items():
            assert torch.equal(weight, second[name]), f"{model}.{name}"


def test_recolouring_turns_hues_and_keeps_brightness():
    import torch

    images = ttm.TrainingImages(16).sample(64, torch.Generator().manual_seed(0)) * 0.5
    turned = ttm.recolour(images, torch.Generator().manual_seed(1))
    changed = (turned - images).abs().flatten(1).amax(1) > 1e-3
    assert 0.25 < changed.float().mean() < 0.75  # about half the images are recoloured
    # turning about the grey axis and scaling saturation keeps each pixel's channel mean
    assert torch.allclose(turned.mean(1), images.mean(1), atol=1e-5)


def test_docs_carry_the_committed_record():
    """docs/toy_model.md's measured part is what docs_section makes of the committed record."""
    record = json.loads((ru.TOY_MODEL / ttm.RECORD_FILE).read_text())
    text = ttm.DOCS.read_text()
    block = text.split(ttm.DOCS_BEGIN, 1)[1].split(ttm.DOCS_END, 1)[0]
    assert block.strip() == ttm.docs_section(record).strip()


def test_a_users_folder_or_a_missing_record_is_refused_before_anything_loads(tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    argv = ["--vae_steps", "1", "--unet_steps", "1", "--checkpoint_dir", str(tmp_path / "ck")]
    assert ttm.main([*argv, "--output_dir", str(mine)]) == ru.EXIT_INPUT
    assert "did not write" in capsys.readouterr().err
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
    assert ttm.main(["--measure_only", "--output_dir", str(tmp_path / "none")]) == ru.EXIT_INPUT
    assert "not a toy model folder" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        ttm.parse_args(["--unet_steps", "-1"])
