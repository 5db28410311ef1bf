"""train_realfill.py: masks, batches, loss, end-to-end runs, exact resume, DDP, bad input."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT, make_scene, run_main_in_process
from PIL import Image
from safetensors.torch import load_file

import realfill_utils as ru
import train_realfill as tr

ACCELERATE = [
    sys.executable, "-m", "accelerate.commands.launch",
    "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
]  # fmt: skip


def train_cmd(model, scene, out, *extra, launcher=(sys.executable,)):
    return [
        *launcher, str(ROOT / "train_realfill.py"),
        "--pretrained_model_name_or_path", str(model), "--train_data_dir", str(scene),
        "--output_dir", str(out), "--resolution", "32", "--train_batch_size", "4",
        "--lr_warmup_steps", "2", "--validation_steps", "0", "--report_to", "none", *extra,
    ]  # fmt: skip


def train_in_process(model, scene, out, *extra):
    """train_realfill.py's main(argv) with train_cmd's flags, in this process."""
    assert run_main_in_process(tr.main, train_cmd(model, scene, out, *extra, launcher=())[1:]) == 0


def run(cmd, **kwargs):
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kwargs)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


# --- masks and batches ------------------------------------------------------------------------
def test_random_masks_are_rectangles_complements_and_sometimes_full():
    generator = torch.Generator().manual_seed(0)
    masks = [tr.random_fill_mask(32, generator) for _ in range(400)]
    full = sum(bool(m.all()) for m in masks)
    assert all(set(m.unique().tolist()) <= {0.0, 1.0} for m in masks)
    assert 20 <= full <= 60  # p = 0.1 of 400
    partial = [m for m in masks if not m.all()]
    assert all(m.any() for m in partial)
    # a rectangle union touches few borders; its complement covers the corners
    corners = [bool(m[0, 0] and m[-1, -1] and m[0, -1] and m[-1, 0]) for m in partial]
    assert 0.2 < np.mean(corners) < 0.8


def test_crop_boxes_stay_inside_the_image():
    generator = torch.Generator().manual_seed(1)
    for height, width in [(40, 48), (31, 45), (100, 20)]:
        for _ in range(50):
            top, left, h, w = tr.random_crop_box(height, width, generator)
            assert min(top, left) >= 0 and top + h <= height and left + w <= width


def _scene_pair(tmp_path):
    """Two scenes identical except for the pixels inside the target's hole."""
    a = make_scene(tmp_path / "a")
    b = make_scene(tmp_path / "b")
    target = np.asarray(Image.open(b / "target" / "target.png")).copy()
    hole = np.asarray(Image.open(b / "target" / "mask.png")) > 0
    target[hole] = np.random.default_rng(5).integers(0, 256, (hole.sum(), 3))
    Image.fromarray(target).save(b / "target" / "target.png")
    return ru.load_scene(a), ru.load_scene(b)


def test_hole_pixels_never_reach_the_batch(tmp_path):
    scene_a, scene_b = _scene_pair(tmp_path)
    sampler_a, sampler_b = tr.SceneSampler(scene_a, 32), tr.SceneSampler(scene_b, 32)
    batch_a = sampler_a.sample(16, torch.Generator().manual_seed(3))
    batch_b = sampler_b.sample(16, torch.Generator().manual_seed(3))
    for key in batch_a:
        assert torch.equal(batch_a[key], batch_b[key]), key
    assert batch_a["images"].shape == (16, 3, 32, 32)
    assert (batch_a["fill_mask"] >= batch_a["hole"]).all()  # unknown pixels are always masked
    assert batch_a["hole"].sum() > 0  # the target was drawn, with its hole


def test_large_photos_are_reduced_once_and_the_hole_still_never_reaches_the_batch(
    tmp_path, monkeypatch
):
    scene_a, scene_b = _scene_pair(tmp_path)  # b: random content inside the target's hole
    full = tr.SceneSampler(scene_a, 8)
    for picture, image in zip(scene_a.references, full.images, strict=False):  # under the floor
        exact = torch.from_numpy(np.asarray(picture, dtype=np.float32)).permute(2, 0, 1)
        assert torch.equal(image, exact / 127.5 - 1.0)  # kept as decoded, not resampled
    monkeypatch.setattr(tr, "MIN_SOURCE_SIDE", 16)  # the test photos count as large
    sampler_a, sampler_b = tr.SceneSampler(scene_a, 8), tr.SceneSampler(scene_b, 8)
    for image, hole in zip(sampler_a.images, sampler_a.holes, strict=True):
        assert min(image.shape[1:]) == 16 and image.shape[1:] == hole.shape[1:]
        assert set(hole.unique().tolist()) <= {0.0, 1.0}
    # every full-size hole pixel lies in a reduced pixel marked unknown
    reduced = sampler_a.holes[-1][None]
    grown = torch.nn.functional.interpolate(reduced, size=full.holes[-1].shape[1:], mode="nearest")
    assert (grown[0][full.holes[-1] > 0] > 0).all()
    batch_a = sampler_a.sample(16, torch.Generator().manual_seed(3))
    batch_b = sampler_b.sample(16, torch.Generator().manual_seed(3))
    for key in batch_a:
        assert torch.equal(batch_a[key], batch_b[key]), key
    assert batch_a["images"].shape == (16, 3, 8, 8) and batch_a["hole"].sum() > 0


def test_masked_mse_normalises_by_the_weight_sum():
    prediction, target = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    ones = torch.ones(2, 1, 8, 8)
    assert torch.allclose(
        tr.masked_mse(prediction, target, ones), ((prediction - target) ** 2).mean()
    )
    weight = ones.clone()
    weight[:, :, :4] = 0
    changed = prediction.clone()
    changed[:, :, :4] += 100
    expected = ((prediction - target)[:, :, 4:] ** 2).mean()
    assert torch.allclose(tr.masked_mse(changed, target, weight), expected)


def test_latent_cells_touching_the_hole_get_no_weight():
    hole = torch.zeros(1, 1, 16, 16)
    hole[..., 5, 9] = 1
    weight = tr.known_latent_weight(hole, (8, 8))
    assert weight[0, 0, 2, 4] == 0 and weight.sum() == 63


def test_target_unknown_pixels_have_no_effect_on_the_loss(tiny_model, tmp_path):
    scene_a, scene_b = _scene_pair(tmp_path)
    components = ru.load_components(tiny_model)
    ru.add_lora(components.unet, components.text_encoder, 4, 4, 0.1)
    models = tr.training_models(components, torch.device("cpu"), torch.float32)
    prompt = tr.tokenize(components.tokenizer, ru.PROMPT)
    empty = tr.tokenize(components.tokenizer, "")
    losses = []
    for scene in (scene_a, scene_b):
        torch.manual_seed(0)
        batch = tr.SceneSampler(scene, 32).sample(8)
        losses.append(tr.training_loss(batch, models, prompt, empty))
    assert torch.equal(losses[0], losses[1])
    assert losses[0].requires_grad


def test_each_distinct_prompt_is_encoded_once_with_the_same_states_and_gradients(tiny_model):
    components = ru.load_components(tiny_model)
    ru.add_lora(components.unet, components.text_encoder, 4, 4, 0.0)  # no dropout: comparable
    encoder = components.text_encoder.double()  # float64: the sums' order does not show
    prompt = tr.tokenize(components.tokenizer, ru.PROMPT)
    empty = tr.tokenize(components.tokenizer, "")
    ids = torch.cat([prompt, empty, prompt, prompt, empty])
    calls = []
    encoder.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    weights = torch.linspace(0.5, 1.5, len(ids), dtype=torch.float64)[:, None, None]
    grads, states = [], []
    for encode in (tr.encode_prompts, lambda e, i: e(i, return_dict=False)[0]):
        encoder.zero_grad()
        hidden = encode(encoder, ids)
        (hidden * weights).square().sum().backward()
        grads.append({n: p.grad.clone() for n, p in encoder.named_parameters() if p.requires_grad})
        states.append(hidden.detach())
    assert calls == [2, len(ids)]  # two distinct prompts: one forward over two rows
    assert torch.allclose(states[0], states[1], rtol=1e-9, atol=1e-12)
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for name, grad in grads[0].items():
        assert torch.allclose(grad, grads[1][name], rtol=1e-9, atol=1e-12), name


# --- end-to-end runs --------------------------------------------------------------------------
def test_accelerate_launch_run_exports_a_lora_a_stock_pipeline_loads(tiny_model, tmp_path):
    scene = make_scene(tmp_path / "scene")
    out = tmp_path / "out"
    run(
        train_cmd(
            tiny_model,
            scene,
            out,
            "--max_train_steps",
            "4",
            "--checkpointing_steps",
            "2",
            "--checkpoints_total_limit",
            "1",
            "--validation_steps",
            "2",
            "--num_validation_images",
            "2",
            "--report_to",
            "tensorboard",
            "--unet_learning_rate",
            "1e-2",
            "--text_encoder_learning_rate",
            "1e-2",
            "--save_merged_pipeline",
            launcher=[*ACCELERATE, "--num_processes", "1"],
        )  # fmt: skip
    )
    settings = json.loads((out / ru.SETTINGS_FILE).read_text())
    assert settings["base_model"] == str(Path(tiny_model).resolve())
    assert settings["resolution"] == 32 and settings["prompt"] == ru.PROMPT
    assert [p.name for p in tr.list_checkpoints(out)] == ["checkpoint-4"]  # limit 1
    assert sorted(p.name for p in (out / "validation").iterdir()) == [
        "step-000002.png", "step-000004.png",
    ]  # fmt: skip
    assert any((out / "logs").rglob("events.out.tfevents*"))
    card = (out / tr.MODEL_CARD).read_text()  # the hub's model card, with its metadata block
    assert card.startswith("---") and "base_model:" in card and "license: mit" in card
    assert "realfill" in card and str(Path(tiny_model).resolve()) in card
    keys = load_file(out / ru.LORA_FILE).keys()
    assert any(k.startswith("unet.") for k in keys) and any(
        k.startswith("text_encoder.") for k in keys
    )

    from diffusers import StableDiffusionInpaintPipeline

    pipe = StableDiffusionInpaintPipeline.from_pretrained(tiny_model, safety_checker=None)
    pipe.set_progress_bar_config(disable=True)
    scene_data = ru.load_scene(scene)

    def sample():
        torch.manual_seed(0)
        return np.asarray(
            ru.generate(pipe, scene_data.target, scene_data.fill_mask, [0], resolution=32,
                        num_inference_steps=2, multiple=16)[0], dtype=np.int16
        )  # fmt: skip

    base = sample()
    pipe.load_lora_weights(out)
    with_lora = sample()
    assert np.abs(with_lora - base).max() > 0
    merged = StableDiffusionInpaintPipeline.from_pretrained(out, safety_checker=None)
    merged.set_progress_bar_config(disable=True)
    pipe = merged
    # Fused weights differ from base + LoRA only by float rounding.
    merged_error = np.abs(sample() - with_lora).mean()
    assert merged_error < 0.1 * np.abs(with_lora - base).mean()


def test_bf16_8bit_adam_and_checkpointing_keep_lora_in_fp32(tiny_model, tmp_path):
    scene = make_scene(tmp_path / "scene")
    out = tmp_path / "out"
    train_in_process(tiny_model, scene, out, "--max_train_steps", "2", "--mixed_precision", "bf16",
                     "--use_8bit_adam", "--gradient_checkpointing")  # fmt: skip
    weights = _lora(out)
    assert weights and all(v.dtype == torch.float32 for v in weights.values())
    assert all(torch.isfinite(v).all() for v in weights.values())


def test_a_bf16_vae_beside_fp32_weights_trains_and_previews(tiny_model, tmp_path):
    scene = make_scene(tmp_path / "scene")
    out = tmp_path / "out"
    train_in_process(tiny_model, scene, out, "--max_train_steps", "2", "--vae_precision", "bf16",
                     "--validation_steps", "2", "--num_validation_images", "1")  # fmt: skip
    weights = _lora(out)
    assert weights and all(torch.isfinite(v).all() for v in weights.values())
    preview = np.asarray(Image.open(out / "validation" / "step-000002.png"))
    assert preview.shape[:2] == ru.load_scene(scene).target.size[::-1]


def test_the_vae_encodes_in_its_own_dtype_inside_mixed_precision_autocast(tiny_model, tmp_path):
    scene = ru.load_scene(make_scene(tmp_path / "scene"))
    components = ru.load_components(tiny_model)
    ru.add_lora(components.unet, components.text_encoder, 4, 4, 0.1)
    seen = []
    components.vae.encoder.conv_out.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    prompt = tr.tokenize(components.tokenizer, ru.PROMPT)
    empty = tr.tokenize(components.tokenizer, "")
    batch = tr.SceneSampler(scene, 32).sample(2)
    for vae_dtype, weight_dtype in ((torch.float32, torch.bfloat16),
                                    (torch.bfloat16, torch.float32)):  # fmt: skip
        components.vae.to(vae_dtype)
        models = tr.training_models(components, torch.device("cpu"), weight_dtype)
        with torch.autocast("cpu", torch.bfloat16, enabled=weight_dtype != torch.float32):
            loss = tr.training_loss(batch, models, prompt, empty)
        assert seen.pop() == vae_dtype and torch.isfinite(loss)


def test_an_optimizer_state_of_per_tensor_adamw_resumes_into_the_fused_one(monkeypatch):
    """Checkpoints written before the fused AdamW hold a per-tensor optimizer's groups; loading
    them must keep the fused step, which a GradScaler (fp16 on CUDA) hands its inf check to."""
    param = torch.nn.Parameter(torch.ones(3))
    (param**2).sum().backward()
    earlier = torch.optim.AdamW([param], lr=1e-3)
    earlier.step()
    fused = tr.make_optimizer([{"params": [param], "lr": 1e-3}], False, 0.01)
    scheduler = torch.optim.lr_scheduler.LambdaLR(fused, lambda step: 1.0)
    state = {"num_processes": 1, "step": 1, "lora": {"unet.weight": param.detach().clone()},
             "optimizer": earlier.state_dict(), "lr_scheduler": scheduler.state_dict()}  # fmt: skip
    files = {"state.pt": state, "rng_state_0.pt": tr.rng_state()}
    monkeypatch.setattr(tr, "load_plain", lambda path: files[path.name])
    accelerator = type("Accelerator", (), {"num_processes": 1, "process_index": 0})
    model = torch.nn.Module()
    model.weight = param
    assert tr.load_checkpoint(accelerator, Path("ckpt"), {"unet": model}, fused, scheduler) == 1
    assert fused.param_groups[0]["fused"]
    assert torch.equal(fused.state[param]["exp_avg"], earlier.state[param]["exp_avg"])
    scaler = torch.amp.GradScaler("cpu")
    scaler.scale((param**2).sum()).backward()
    scaler.step(fused)  # raised "Expected grad_scale and found_inf to be None" before


def test_a_checkpoint_resumes_only_with_the_vae_dtype_it_was_trained_with(tiny_model, tmp_path):
    """The VAE's dtype is not in the fingerprint (`auto` resolves per machine): each checkpoint
    records it, and a resume that would encode in another dtype is refused, nothing deleted."""
    scene = make_scene(tmp_path / "scene")
    out, log = tmp_path / "out", tmp_path / "log.txt"

    def argv(precision, steps):
        return train_cmd(tiny_model, scene, out, "--max_train_steps", str(steps),
                         "--checkpointing_steps", "1", "--resume_from_checkpoint", "latest",
                         "--vae_precision", precision, launcher=())[1:]  # fmt: skip

    assert run_main_in_process(tr.main, argv("bf16", 2), log) == 0
    newest = out / "checkpoints" / "checkpoint-2"
    assert json.loads((newest / tr.INPUTS_FILE).read_text())["vae_dtype"] == "bfloat16"
    assert run_main_in_process(tr.main, argv("fp32", 2), log) == ru.EXIT_INPUT
    assert "trained with the VAE in bfloat16" in log.read_text()
    assert "resume with --vae_precision bf16" in log.read_text()
    assert [c.name for c in tr.list_checkpoints(out)] == ["checkpoint-1", "checkpoint-2"]
    # a checkpoint of a version before --vae_precision: its VAE had the weights' dtype (fp32)
    inputs = json.loads((newest / tr.INPUTS_FILE).read_text())
    (newest / tr.INPUTS_FILE).write_text(json.dumps({"fingerprint": inputs["fingerprint"]}))
    assert run_main_in_process(tr.main, argv("fp32", 2), log) == 0
    assert "resumed from" in log.read_text() and "at step 2" in log.read_text()
    settings = json.loads((out / ru.SETTINGS_FILE).read_text())
    assert settings["vae_dtype"] == "float32"


def test_fp16_is_refused_where_accelerate_is_told_to_use_the_cpu_even_beside_a_gpu(monkeypatch):
    args = tr.parse_args(["--train_data_dir", "s", "--output_dir", "o",
                          "--mixed_precision", "fp16"])  # fmt: skip
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.delenv("ACCELERATE_USE_CPU", raising=False)
    tr.refuse_fp16_without_gpu(args)  # a GPU, and nothing moves the run off it
    monkeypatch.setenv("ACCELERATE_USE_CPU", "true")
    with pytest.raises(ru.SceneError, match="ACCELERATE_USE_CPU puts this run on the CPU"):
        tr.refuse_fp16_without_gpu(args)


def test_vae_precision_auto_is_bf16_only_on_a_cpu_that_runs_it_natively(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    for native in (True, False):
        monkeypatch.setattr(tr, "cpu_has_native_bf16", lambda native=native: native)
        expected = torch.bfloat16 if native else torch.float32
        assert tr.vae_dtype("auto", cpu, torch.float32) == expected
        assert tr.vae_dtype("fp32", cpu, torch.float32) == torch.float32
        assert tr.vae_dtype("auto", cpu, torch.bfloat16) == torch.bfloat16  # --mixed_precision's
        assert tr.vae_dtype("auto", cuda, torch.float32) == torch.float32
        assert tr.vae_dtype("auto", cuda, torch.float16) == torch.float16
    assert tr.vae_dtype("bf16", cuda, torch.float16) == torch.bfloat16


def _lora(path):
    return load_file(Path(path) / ru.LORA_FILE)


def test_run_killed_and_resumed_ends_with_the_same_weights(tiny_model, tmp_path):
    scene = make_scene(tmp_path / "scene")
    steps = ["--max_train_steps", "16", "--checkpointing_steps", "3", "--lr_scheduler", "cosine"]
    # the uninterrupted run goes on beside the interrupted one: a separate process either way
    whole_run = subprocess.Popen(
        train_cmd(tiny_model, scene, tmp_path / "whole", *steps),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        interrupted = tmp_path / "interrupted"
        process = subprocess.Popen(
            train_cmd(tiny_model, scene, interrupted, *steps),
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        # a monotonic clock: the wall clock of a CI sandbox may jump while a test runs
        deadline = time.monotonic() + 240
        while not (interrupted / "checkpoints" / "checkpoint-3").exists():
            assert process.poll() is None, "run ended before the kill"
            assert time.monotonic() < deadline, "no checkpoint-3 within 240 s"
            time.sleep(0.02)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        assert not (interrupted / ru.LORA_FILE).exists()
        result = run(
            train_cmd(tiny_model, scene, interrupted, *steps, "--resume_from_checkpoint", "latest")
        )
        assert "resumed from" in result.stdout
        output, _ = whole_run.communicate(timeout=600)
        assert whole_run.returncode == 0, output[-3000:]
    finally:  # never left running behind a failed assertion
        whole_run.kill()
        whole_run.wait()
    whole, resumed = _lora(tmp_path / "whole"), _lora(interrupted)
    assert whole.keys() == resumed.keys()
    for key in whole:
        assert torch.equal(whole[key], resumed[key]), key


def test_two_processes_train_and_only_one_writes(tiny_model, tmp_path):
    scene = make_scene(tmp_path / "scene")
    out = tmp_path / "out"
    # `accelerate launch --cpu` starts one process; this is how two CPU processes (gloo) start.
    result = run(
        train_cmd(
            tiny_model,
            scene,
            out,
            "--max_train_steps",
            "2",
            "--checkpointing_steps",
            "2",
            launcher=[*ACCELERATE, "--multi_gpu", "--num_processes", "2"],
        ),  # fmt: skip
        env={**os.environ, "ACCELERATE_USE_CPU": "true"},
    )
    assert result.stdout.count("LoRA written") == 1
    checkpoint = tr.list_checkpoints(out)[-1]
    assert sorted(p.name for p in checkpoint.iterdir()) == [
        tr.INPUTS_FILE, "rng_state_0.pt", "rng_state_1.pt", "state.pt",
    ]  # fmt: skip
    assert (out / ru.LORA_FILE).is_file()
    bookkeeping = {ru.LOCK_FILE, ru.MANIFEST_FILE}  # the output-folder rule's own files
    leftovers = [p for p in out.rglob("*") if p.name.startswith(".") and p.name not in bookkeeping]
    assert leftovers == []  # no half-written temporary file of either process


# --- bad input: a clear error before any model is loaded -------------------------------------
@pytest.mark.parametrize(
    "breakage, expected",
    [
        ("mask size", "masks must match the target size"),
        ("no references", "no reference images"),
        ("empty mask", "no fill pixels"),
    ],
)
def test_bad_scene_fails_before_the_model_loads(tmp_path, breakage, expected, capsys):
    scene = make_scene(tmp_path / "scene")
    if breakage == "mask size":
        Image.new("L", (10, 10), 255).save(scene / "target" / "mask.png")
    elif breakage == "no references":
        for p in (scene / "ref").iterdir():
            p.unlink()
    else:
        Image.new("L", (48, 40), 0).save(scene / "target" / "mask.png")
    # The model path does not exist: the scene error must come first.
    args = ["--pretrained_model_name_or_path", str(tmp_path / "no-model")]
    argv = [*args, "--train_data_dir", str(scene), "--output_dir", str(tmp_path / "o")]
    assert tr.main(argv) == ru.EXIT_INPUT
    assert expected in capsys.readouterr().err
    assert not (tmp_path / "o" / ru.LORA_FILE).exists()


def test_unavailable_base_model_is_a_clear_error(tmp_path, capsys):
    scene = make_scene(tmp_path / "scene")
    assert tr.main(["--pretrained_model_name_or_path", "nobody/uncached-model",
                    "--train_data_dir", str(scene),
                    "--output_dir", str(tmp_path / "o")]) == ru.EXIT_INPUT  # fmt: skip
    assert re.search("unavailable.*local pipeline folder", capsys.readouterr().err)


@pytest.mark.parametrize(
    "flags, expected",
    [
        (["--resolution", "36"], "--resolution 36 is not a positive multiple"),
        (["--logging_dir", "/tmp/elsewhere"], "the logs go inside --output_dir"),
        (["--logging_dir", "../up"], "the logs go inside --output_dir"),
    ],
)
def test_bad_flags_fail_before_the_model_loads_and_write_nothing(
    tiny_model, tmp_path, capsys, flags, expected
):
    scene = make_scene(tmp_path / "scene")
    argv = train_cmd(tiny_model, scene, tmp_path / "o", *flags, launcher=())[1:]
    assert tr.main(argv) == ru.EXIT_INPUT
    assert expected in capsys.readouterr().err
    assert not (tmp_path / "o").exists() and not (tmp_path / "up").exists()


def test_counts_below_one_are_refused_at_parsing(capsys):
    for flag in ("--resolution", "--max_train_steps", "--train_batch_size", "--lora_rank"):
        with pytest.raises(SystemExit) as parsed:
            tr.parse_args(["--train_data_dir", "s", "--output_dir", "o", flag, "0"])
        assert parsed.value.code == 2 and "must be at least 1" in capsys.readouterr().err


@pytest.mark.parametrize("flag", ["--mixed_precision", "--vae_precision"])
def test_fp16_on_cpu_is_refused(tiny_model, tmp_path, capsys, flag):
    scene = make_scene(tmp_path / "scene")
    assert tr.main(["--pretrained_model_name_or_path", str(tiny_model), "--train_data_dir",
                    str(scene), "--output_dir", str(tmp_path / "o"),
                    flag, "fp16"]) == ru.EXIT_INPUT  # fmt: skip
    assert f"{flag} fp16 needs a CUDA GPU" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # refused before the output folder is claimed


# --- the original project's flags, the hub, checkpoints without pickled objects ---------------
def test_original_training_flags_are_accepted_and_weight_decay_reaches_adamw(tmp_path):
    argv = ["--train_data_dir", "s", "--output_dir", str(tmp_path), "--num_train_epochs", "3",
            "--adam_weight_decay", "0.05", "--logging_dir", "tb",
            "--hub_model_id", "me/x"]  # fmt: skip
    args = tr.parse_args(argv)
    assert args.num_train_epochs == 3 and args.hub_model_id == "me/x" and not args.push_to_hub
    assert "tb" in tr.output_entries(args) and "logs" not in tr.output_entries(args)
    param = torch.nn.Parameter(torch.zeros(2))
    optimizer = tr.make_optimizer([{"params": [param], "lr": 1e-3}], False, args.adam_weight_decay)
    assert optimizer.param_groups[0]["weight_decay"] == 0.05


def test_push_to_hub_offline_fails_before_training(tiny_model, tmp_path, monkeypatch, capsys):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    scene = make_scene(tmp_path / "scene")
    start = time.perf_counter()
    code = tr.main(["--pretrained_model_name_or_path", str(tiny_model), "--train_data_dir",
                    str(scene), "--output_dir", str(tmp_path / "o"), "--push_to_hub"])  # fmt: skip
    assert code == ru.EXIT_INPUT and time.perf_counter() - start < 30
    assert "--push_to_hub needs the network but HF_HUB_OFFLINE is set" in capsys.readouterr().err
    assert not (tmp_path / "o" / ru.LORA_FILE).exists()


def test_checkpoints_load_without_unpickling_objects(tiny_model, tmp_path):
    scene = make_scene(tmp_path / "scene")
    out = tmp_path / "out"
    train_in_process(tiny_model, scene, out, "--max_train_steps", "2", "--checkpointing_steps", "2")
    checkpoint = tr.list_checkpoints(out)[-1]
    state = torch.load(checkpoint / "state.pt", weights_only=True)
    assert state["step"] == 2 and state["lora"] and "state" in state["optimizer"]
    rng = torch.load(checkpoint / "rng_state_0.pt", weights_only=True)
    tr.set_rng_state(rng)  # the restored state is the saved one
    assert torch.equal(torch.get_rng_state(), rng["torch"])
    assert tr.rng_state()["python"] == rng["python"]


def test_full_target_trains_the_whole_unet_and_infer_uses_it(tiny_model, tmp_path):
    """--lora_target full: the UNet is saved whole (every weight moved, no UNet LoRA keys),
    the text encoder keeps its LoRA, and infer.py samples with the fine-tuned UNet."""
    from diffusers import UNet2DConditionModel

    import infer

    scene = make_scene(tmp_path / "scene")
    out = tmp_path / "out"
    train_in_process(tiny_model, scene, out, "--max_train_steps", "2", "--lora_target", "full",
                     "--unet_learning_rate", "1e-2", "--vae_precision", "fp32")  # fmt: skip
    keys = _lora(out).keys()
    assert keys and all(k.startswith("text_encoder.") for k in keys)
    base = UNet2DConditionModel.from_pretrained(tiny_model, subfolder="unet").state_dict()
    tuned = UNet2DConditionModel.from_pretrained(out, subfolder=ru.FULL_UNET_DIR).state_dict()
    assert base.keys() == tuned.keys()
    assert not torch.equal(base["conv_in.weight"], tuned["conv_in.weight"])
    source = infer.inspect_model_path(out)
    loaded = infer.load_model_components(source).unet.state_dict()
    assert torch.equal(loaded["conv_in.weight"], tuned["conv_in.weight"])
    # a folder that lost its UNet is refused by name, before anything loads
    (out / ru.FULL_UNET_DIR / "config.json").unlink()
    with pytest.raises(ru.SceneError, match="--lora_target full.*config.json"):
        infer.inspect_model_path(out)


def test_a_run_on_a_changed_scene_never_resumes_the_old_runs_checkpoints(tiny_model, tmp_path):
    """A ReFill round trained again on a new scene once resumed the old round's last
    checkpoint and trained 0 steps on the new scene; checkpoints carry the run's fingerprint."""
    scene = make_scene(tmp_path / "scene")
    out, log = tmp_path / "out", tmp_path / "log.txt"
    steps = ["--max_train_steps", "4", "--checkpointing_steps", "2"]
    again = [*steps, "--resume_from_checkpoint", "latest"]
    argv = train_cmd(tiny_model, scene, out, *again, launcher=())[1:]
    assert run_main_in_process(tr.main, argv, log) == 0
    first = _lora(out)
    assert run_main_in_process(tr.main, argv, log) == 0  # same scene and settings: resumed
    assert "resumed from" in log.read_text() and "at step 4" in log.read_text()
    Image.new("RGB", (60, 44), (200, 30, 90)).save(scene / "ref" / "9.png")  # a new reference
    assert run_main_in_process(tr.main, argv, log) == 0
    text = log.read_text()
    assert "resumed from" not in text and "removing 2 checkpoint(s)" in text
    retrained = _lora(out)
    assert any(not torch.equal(first[k], retrained[k]) for k in first)
    with pytest.raises(ru.SceneError, match="another scene or other settings"):
        old = out / "checkpoints" / "checkpoint-4"
        (old / tr.INPUTS_FILE).write_text('{"fingerprint": "another run"}')
        tr.check_inputs(tr.parse_args([*argv[:-2], "--resume_from_checkpoint", str(old)]))
