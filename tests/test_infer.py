"""infer.py on the tiny model: reproducible per-image seeds, batch-size invariance, the known
region kept exactly, original sizes, both model-folder kinds, atomic outputs, early errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, make_scene, run_main_in_process
from PIL import Image

import infer
import realfill_utils as ru

STEPS = 2  # sampler steps: enough to exercise the scheduler's per-step noise
RESOLUTION = 32  # tiny model, tiny images: the properties do not depend on size
SETTINGS_RESOLUTION = 40  # written into the LoRA folder's settings, read back by infer.py
# Per-image determinism is exact on this CPU (0 levels apart); 1 level is allowed in case batched
# convolutions round differently elsewhere.
TOLERANCE = 1


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def max_diff(a: Image.Image, b: Image.Image) -> int:
    return int(np.abs(pixels(a) - pixels(b)).max())


@pytest.fixture(scope="module")
def lora_dir(tiny_model, tmp_path_factory) -> Path:
    """A train_realfill.py-style output folder: random non-zero LoRA + settings JSON."""
    import torch

    folder = tmp_path_factory.mktemp("lora-model")
    components = ru.load_components(tiny_model)
    ru.add_lora(components.unet, components.text_encoder, rank=4, alpha=8, dropout=0.0)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for model in (components.unet, components.text_encoder):
            for name, param in model.named_parameters():
                if "lora_B" in name:  # zero at init: the LoRA would change nothing
                    param.copy_(torch.randn(param.shape, generator=generator) * 0.3)
    ru.save_lora(folder, components.unet, components.text_encoder)
    settings = {
        "schema_version": 1,
        "base_model": str(tiny_model),
        "resolution": SETTINGS_RESOLUTION,
        "prompt": ru.PROMPT,
        "lora_rank": 4,
        "lora_alpha": 8,
        "args": {},
    }
    (folder / ru.SETTINGS_FILE).write_text(json.dumps(settings))
    return folder


@pytest.fixture(scope="module")
def merged_dir(lora_dir, tiny_model, tmp_path_factory) -> Path:
    """The same weights saved as a merged pipeline, as earlier implementations wrote them."""
    from diffusers import StableDiffusionInpaintPipeline

    folder = tmp_path_factory.mktemp("merged") / "model"
    pipe = StableDiffusionInpaintPipeline.from_pretrained(
        tiny_model, safety_checker=None, requires_safety_checker=False
    )
    pipe.load_lora_weights(lora_dir)
    pipe.fuse_lora()
    pipe.unload_lora_weights()
    pipe.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def pipes(tiny_model, lora_dir):
    """Loaded once: {"base": (pipe, multiple), "lora": (pipe, multiple)}."""
    ru.quiet_libraries()
    loaded = {}
    for name, path in (("base", tiny_model), ("lora", lora_dir)):
        pipe, components = infer.load_pipeline(infer.inspect_model_path(path), "ddpm")
        loaded[name] = (pipe, components.size_multiple)
    return loaded


def run_complete(pipe_and_multiple, scene: ru.Scene, seeds, batch_size=4, **kwargs):
    pipe, multiple = pipe_and_multiple
    return list(
        infer.complete(
            pipe,
            scene.target,
            scene.fill_mask,
            seeds,
            batch_size=batch_size,
            resolution=RESOLUTION,
            num_inference_steps=STEPS,
            multiple=multiple,
            **kwargs,
        )
    )


def assert_known_region_kept(completion: Image.Image, scene: ru.Scene, radius: float) -> None:
    far = ru.feather(scene.fill_mask, radius) == 0
    assert completion.size == scene.target.size
    assert np.array_equal(pixels(completion)[far], pixels(scene.target)[far])


def test_script_writes_completions_and_reads_training_settings(lora_dir, tmp_path, capsys):
    scene = make_scene(tmp_path / "scene")
    out = tmp_path / "results"
    ru.claim_output_dir(out, "infer.py", ["7.png", "completions.json"])  # an earlier, longer
    for stale in ("7.png", "completions.json"):  # run recorded and wrote these
        (out / stale).write_bytes(b"old")
    argv = [
        f"--model_path={lora_dir}",
        f"--validation_image={scene / 'target/target.png'}",
        f"--validation_mask={scene / 'target/mask.png'}",
        f"--output_dir={out}",
        "--seed=10",
        "--num_images=3",
        "--batch_size=2",
        f"--num_inference_steps={STEPS}",
        "--feather_radius=3",
        "--keep_raw",
    ]
    assert run_main_in_process(infer.main, argv) == 0  # the script's own main, in this process
    assert "3 completions of 48x40" in capsys.readouterr().out

    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "0.png",
        "1.png",
        "2.png",
        "completions.json",
        "raw",
    ]
    record = json.loads((out / "completions.json").read_text())
    assert record["seeds"] == [10, 11, 12]
    assert [i["seed"] for i in record["images"]] == [10, 11, 12]
    assert record["model_kind"] == "lora"
    assert (
        record["base_model"] == json.loads((lora_dir / ru.SETTINGS_FILE).read_text())["base_model"]
    )
    assert record["resolution"] == SETTINGS_RESOLUTION  # from the settings, not the default
    assert record["scheduler"] == "ddpm" and record["num_inference_steps"] == STEPS
    assert record["target_size"] == [48, 40] and record["feather_radius"] == 3
    assert set(record["timings"]) == {
        "load_s",
        "generate_s",
        "total_s",
        "per_image_s",
        "generate_cpu_s",
    }

    loaded = ru.load_scene(scene)
    model_w, model_h = record["model_size"]
    for i in range(3):
        completion = Image.open(out / f"{i}.png")
        assert_known_region_kept(completion, loaded, radius=3)
        hole = loaded.fill_mask
        assert not np.array_equal(pixels(completion)[hole], pixels(loaded.target)[hole])
        assert Image.open(out / "raw" / f"{i}.png").size == (model_w, model_h)


def test_accelerate_launch_splits_images_across_processes(tiny_model, pipes, tmp_path):
    scene_dir = make_scene(tmp_path / "scene")
    out = tmp_path / "results"
    cmd = [
        *(sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes=2"),
        *("--num_machines=1", "--mixed_precision=no", "--dynamo_backend=no"),
        str(ROOT / "infer.py"),
        f"--model_path={tiny_model}",
        f"--validation_image={scene_dir / 'target/target.png'}",
        f"--validation_mask={scene_dir / 'target/mask.png'}",
        f"--output_dir={out}",
        "--num_images=3",
        "--batch_size=1",
        f"--num_inference_steps={STEPS}",
        f"--resolution={RESOLUTION}",
        "--device=cpu",
    ]
    env = dict(os.environ, HF_HUB_OFFLINE="1", ACCELERATE_USE_CPU="true")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("3 completions of") == 1  # only the main process reports
    assert json.loads((out / "completions.json").read_text())["num_processes"] == 2
    single = run_complete(pipes["base"], ru.load_scene(scene_dir), [0, 1, 2])
    for i, (_, _, completion) in enumerate(single):
        assert max_diff(Image.open(out / f"{i}.png"), completion) <= TOLERANCE


def test_image_regenerated_alone_equals_its_batch_twin(pipes, scene_dir):
    scene = ru.load_scene(scene_dir)
    batch = run_complete(pipes["lora"], scene, [5, 6, 7], batch_size=3)
    alone = run_complete(pipes["lora"], scene, [7], batch_size=1)
    assert max_diff(alone[0][1], batch[2][1]) <= TOLERANCE
    assert max_diff(alone[0][2], batch[2][2]) <= TOLERANCE
    assert max_diff(batch[0][1], batch[1][1]) > 10  # different seeds: different images


def test_batch_size_does_not_change_the_images(pipes, scene_dir):
    scene = ru.load_scene(scene_dir)
    seeds = [0, 1, 2, 3, 4]
    by_one = run_complete(pipes["base"], scene, seeds, batch_size=1)
    by_three = run_complete(pipes["base"], scene, seeds, batch_size=3)  # 3 + 2
    assert [s for s, _, _ in by_three] == seeds
    for (_, raw_a, done_a), (_, raw_b, done_b) in zip(by_one, by_three, strict=True):
        assert max_diff(raw_a, raw_b) <= TOLERANCE
        assert max_diff(done_a, done_b) <= TOLERANCE


@pytest.mark.parametrize("size, hole", [((45, 31), (10, 8, 30, 22)), ((30, 52), (0, 20, 30, 52))])
def test_odd_and_non_square_targets_keep_their_size(pipes, tmp_path, size, hole):
    scene = ru.load_scene(make_scene(tmp_path / "scene", size=size, hole=hole))
    ((_, raw, completion),) = run_complete(pipes["base"], scene, [3], feather_radius=4)
    multiple = pipes["base"][1]
    assert raw.size == ru.model_size(size, RESOLUTION, multiple)
    assert raw.size[0] % multiple == 0 and raw.size[1] % multiple == 0
    assert_known_region_kept(completion, scene, radius=4)


def test_hard_paste_with_zero_feather(pipes, scene_dir):
    scene = ru.load_scene(scene_dir)
    ((_, raw, completion),) = run_complete(pipes["base"], scene, [1], feather_radius=0)
    assert_known_region_kept(completion, scene, radius=0)  # every known pixel


def test_lora_changes_the_output(pipes, scene_dir):
    scene = ru.load_scene(scene_dir)
    ((_, base, _),) = run_complete(pipes["base"], scene, [2])
    ((_, lora, _),) = run_complete(pipes["lora"], scene, [2])
    assert np.abs(pixels(base) - pixels(lora)).mean() > 2


def test_merged_folders_load_and_match_the_lora_folder(pipes, merged_dir, tiny_model, tmp_path):
    scene = ru.load_scene(make_scene(tmp_path / "scene"))
    ((_, from_lora, _),) = run_complete(pipes["lora"], scene, [4])

    source = infer.inspect_model_path(merged_dir)
    assert (source.kind, source.base_model) == ("pipeline", None)  # self-contained
    pipe, components = infer.load_pipeline(source, "ddpm")
    ((_, from_merged, _),) = run_complete((pipe, components.size_multiple), scene, [4])
    assert max_diff(from_merged, from_lora) <= TOLERANCE

    # Only unet/ and text_encoder/ kept: the rest comes from the base model.
    partial = tmp_path / "partial"
    for sub in ("unet", "text_encoder"):
        shutil.copytree(merged_dir / sub, partial / sub)
    source = infer.inspect_model_path(partial, base_override=str(tiny_model))
    assert (source.kind, source.base_model) == ("pipeline", str(tiny_model))
    pipe, components = infer.load_pipeline(source, "ddpm")
    ((_, from_partial, _),) = run_complete((pipe, components.size_multiple), scene, [4])
    assert max_diff(from_partial, from_lora) <= TOLERANCE


def test_interrupted_run_leaves_only_whole_images(lora_dir, tmp_path, monkeypatch):
    scene = make_scene(tmp_path / "scene")
    out = tmp_path / "results"
    ru.claim_output_dir(out, "infer.py", ["completions.json"])  # an earlier run's, which
    (out / "completions.json").write_text("{}")  # no longer holds
    saves = []
    real_save = Image.Image.save

    def save_then_die(self, fp, *args, **kwargs):
        saves.append(fp)
        if len(saves) == 2:  # killed half-way through writing the second image
            Path(fp).write_bytes(b"\x89PNG half")
            raise KeyboardInterrupt
        return real_save(self, fp, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", save_then_die)
    args = infer.parse_args(
        [
            f"--model_path={lora_dir}",
            f"--validation_image={scene / 'target/target.png'}",
            f"--validation_mask={scene / 'target/mask.png'}",
            f"--output_dir={out}",
            "--num_images=3",
            f"--num_inference_steps={STEPS}",
            f"--resolution={RESOLUTION}",
        ]
    )
    with pytest.raises(KeyboardInterrupt):
        infer.run(args)
    # no temp file, no stale JSON (the hidden manifest and lock are the folder's bookkeeping)
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".realfill")) == ["0.png"]
    monkeypatch.undo()
    assert Image.open(out / "0.png").size == (48, 40)


@pytest.fixture
def no_model_loading(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the inputs were checked")

    monkeypatch.setattr(ru, "load_components", refuse)


def _bad_inputs(tmp_path: Path, lora_dir: Path, case: str) -> tuple[list[str], str]:
    scene = make_scene(tmp_path / "scene")
    image, mask = scene / "target/target.png", scene / "target/mask.png"
    model, out = lora_dir, tmp_path / "out"
    expected = {
        "missing model": "model folder not found",
        "empty model": "neither a RealFill LoRA folder",
        "lora without settings": "base model it was trained on is unknown",
        "broken settings": "cannot read the training settings",
        "lora cut short": "not a whole safetensors file",
        "mask size": "masks must match the target size",
        "missing image": "file not found",
        "unwritable output": "output folder is not writable",
        "fp16 on cpu": "fp16 needs a CUDA GPU",
        "cuda without gpu": "no CUDA GPU is visible",
        "uncertainty without prior": "needs --prior_image",
        "uncertainty with one image": "needs --num_images 2 or more",
        "uncertainty size": "it must be the uncertainty.png",
    }[case]
    extra = []
    if case == "missing model":
        model = tmp_path / "nowhere"
    elif case == "empty model":
        model = tmp_path / "empty"
        model.mkdir()
        (model / "notes.txt").write_text("x")
    elif case in ("lora without settings", "broken settings"):
        model = tmp_path / "lora"
        model.mkdir()
        shutil.copy(lora_dir / ru.LORA_FILE, model)
        if case == "broken settings":
            (model / ru.SETTINGS_FILE).write_text('{"schema_version": 1, "base_')
    elif case == "lora cut short":
        model = tmp_path / "lora"
        shutil.copytree(lora_dir, model)
        whole = (lora_dir / ru.LORA_FILE).read_bytes()
        (model / ru.LORA_FILE).write_bytes(whole[: len(whole) // 2])
    elif case == "mask size":
        mask = tmp_path / "small-mask.png"
        Image.open(scene / "target/mask.png").resize((24, 20)).save(mask)
    elif case == "missing image":
        image = tmp_path / "nope.png"
    elif case == "unwritable output":
        (tmp_path / "a-file").write_text("x")
        out = tmp_path / "a-file" / "out"
    elif case == "fp16 on cpu":
        extra = ["--mixed_precision=fp16", "--device=cpu"]
    elif case == "cuda without gpu":
        extra = ["--device=cuda"]
    elif case.startswith("uncertainty"):
        small = tmp_path / "uncertainty.png"
        Image.new("L", (24, 20) if case.endswith("size") else (48, 40)).save(small)
        extra = [f"--prior_uncertainty={small}", "--num_images=2"]
        if case != "uncertainty without prior":
            extra.append(f"--prior_image={image}")
        if case.endswith("one image"):
            extra.append("--num_images=1")
    argv = [
        f"--model_path={model}",
        f"--validation_image={image}",
        f"--validation_mask={mask}",
        f"--output_dir={out}",
        *extra,
    ]
    return argv, expected


@pytest.mark.parametrize(
    "case",
    [
        "missing model",
        "empty model",
        "lora without settings",
        "broken settings",
        "lora cut short",
        "mask size",
        "missing image",
        "unwritable output",
        "fp16 on cpu",
        "cuda without gpu",
        "uncertainty without prior",
        "uncertainty with one image",
        "uncertainty size",
    ],
)
def test_bad_inputs_fail_clearly_before_any_model_loads(case, lora_dir, tmp_path, no_model_loading):
    if case == "cuda without gpu":
        import torch

        if torch.cuda.is_available():
            pytest.skip("a GPU is visible here")
    argv, expected = _bad_inputs(tmp_path, lora_dir, case)
    with pytest.raises(ru.SceneError, match=expected):
        infer.run(infer.parse_args(argv))


def test_script_reports_bad_input_without_traceback(lora_dir, tmp_path):
    argv, expected = _bad_inputs(tmp_path, lora_dir, "missing model")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "infer.py"), *argv], capture_output=True, text=True
    )
    assert proc.returncode == ru.EXIT_INPUT  # was 1: bad input exits 2 in every script
    assert proc.stderr.startswith("error: ") and expected in proc.stderr
    assert "Traceback" not in proc.stderr


def test_stock_pipeline_with_the_lora_reproduces_infer(pipes, lora_dir, tiny_model, scene_dir):
    """No private diffusers method is replaced: a stock pipeline + load_lora_weights, given the
    same seed and the masked-image latents, samples infer.py's raw image."""
    import torch
    from diffusers import StableDiffusionInpaintPipeline

    scene = ru.load_scene(scene_dir)
    ((_, ours, _),) = run_complete(pipes["lora"], scene, [4])
    stock = StableDiffusionInpaintPipeline.from_pretrained(
        tiny_model, safety_checker=None, requires_safety_checker=False
    )
    stock.load_lora_weights(lora_dir)
    stock.set_progress_bar_config(disable=True)
    width, height = ru.model_size(scene.target.size, RESOLUTION, pipes["lora"][1])
    image = scene.target.resize((width, height), Image.Resampling.LANCZOS)
    mask = Image.fromarray(scene.fill_mask.astype(np.uint8) * 255).resize(
        (width, height), Image.Resampling.NEAREST
    )
    latents = ru.encode_by_mean(stock, image, np.asarray(mask) >= ru.MASK_THRESHOLD)
    theirs = stock(
        prompt=ru.PROMPT,
        image=image,
        mask_image=mask,
        masked_image_latents=latents,
        height=height,
        width=width,
        num_inference_steps=STEPS,
        guidance_scale=ru.GUIDANCE_SCALE,
        generator=torch.Generator().manual_seed(4),
    ).images[0]
    assert max_diff(ours, theirs) <= TOLERANCE


def test_a_prior_guides_sampling_and_keeps_the_known_region(pipes, scene_dir):
    scene = ru.load_scene(scene_dir)
    prior = Image.fromarray(
        np.where(scene.fill_mask[..., None], 0, pixels(scene.target)).astype(np.uint8)
    )
    ((_, free, _),) = run_complete(pipes["base"], scene, [3])
    ((_, weak, _),) = run_complete(pipes["base"], scene, [3], prior=prior, strength=1.0)
    ((_, guided, done),) = run_complete(pipes["base"], scene, [3], prior=prior, strength=0.5)
    assert max_diff(free, weak) <= TOLERANCE  # strength 1: pure noise, the prior is ignored
    hole = np.asarray(guided.resize(scene.target.size))[scene.fill_mask].mean()
    assert hole < np.asarray(free.resize(scene.target.size))[scene.fill_mask].mean() - 20
    assert_known_region_kept(done, scene, ru.FEATHER_RADIUS)


def test_prior_uncertainty_pulls_completions_towards_a_sure_prior(lora_dir, tmp_path):
    """Geometry-guided completion: where the prior's expected error is 0 the completions follow
    it; where it has no estimate (255) they are the diffusion's own; the known region is kept."""
    import geometry

    scene_dir = make_scene(tmp_path / "scene")
    scene = ru.load_scene(scene_dir)
    green = np.array([0, 255, 0])
    prior = np.where(scene.fill_mask[..., None], green, pixels(scene.target)).astype(np.uint8)
    Image.fromarray(prior).save(tmp_path / "prior.png")
    uncertainty = np.zeros(scene.fill_mask.shape)
    half = scene.fill_mask.shape[1] // 2
    uncertainty[:, half:] = np.inf
    geometry.uncertainty_image(uncertainty).save(tmp_path / "uncertainty.png")
    common = [
        f"--model_path={lora_dir}",
        f"--validation_image={scene_dir / 'target/target.png'}",
        f"--validation_mask={scene_dir / 'target/mask.png'}",
        "--num_images=3",
        f"--num_inference_steps={STEPS}",
        f"--prior_image={tmp_path / 'prior.png'}",
        "--strength=1",  # sampling ignores the prior: only the fusing uses it
    ]
    plain = infer.run(infer.parse_args([*common, f"--output_dir={tmp_path / 'plain'}"]))
    fused = infer.run(
        infer.parse_args(
            [
                *common,
                f"--output_dir={tmp_path / 'fused'}",
                f"--prior_uncertainty={tmp_path / 'uncertainty.png'}",
            ]
        )
    )
    assert plain["prior_weight_in_hole"] is None and 0 < fused["prior_weight_in_hole"] < 1
    assert fused["prior_uncertainty"] == str((tmp_path / "uncertainty.png").resolve())
    sure = scene.fill_mask.copy()
    sure[:, half:] = False
    unsure = scene.fill_mask & ~sure
    for i in range(3):
        before = pixels(Image.open(tmp_path / "plain" / f"{i}.png"))
        after = pixels(Image.open(tmp_path / "fused" / f"{i}.png"))
        fused_image = Image.open(tmp_path / "fused" / f"{i}.png")
        assert_known_region_kept(fused_image, scene, ru.FEATHER_RADIUS)
        assert np.array_equal(before[unsure], after[unsure])
        # the prior's weight there is at least 1/2 (0 expected error against any spread)
        assert np.abs(after[sure] - green).mean() <= np.abs(before[sure] - green).mean() / 2 + 1


def test_a_prior_the_references_barely_cover_does_not_steer_sampling(lora_dir, tmp_path):
    """Under infer.MIN_PRIOR_COVERAGE of the hole with an estimate, sampling starts from noise
    (the completions equal those without a prior) and the record says so."""
    import geometry

    scene_dir = make_scene(tmp_path / "scene")
    scene = ru.load_scene(scene_dir)
    Image.new("RGB", scene.target.size, (0, 255, 0)).save(tmp_path / "prior.png")
    unseen = np.full(scene.fill_mask.shape, np.inf)  # no reference sees any of the hole
    geometry.uncertainty_image(unseen).save(tmp_path / "uncertainty.png")
    common = [
        f"--model_path={lora_dir}",
        f"--validation_image={scene_dir / 'target/target.png'}",
        f"--validation_mask={scene_dir / 'target/mask.png'}",
        "--num_images=2",
        f"--num_inference_steps={STEPS}",
    ]
    infer.run(infer.parse_args([*common, f"--output_dir={tmp_path / 'plain'}"]))
    guided = [
        f"--output_dir={tmp_path / 'guided'}",
        f"--prior_image={tmp_path / 'prior.png'}",
        f"--prior_uncertainty={tmp_path / 'uncertainty.png'}",
        "--strength=0.5",
    ]
    record = infer.run(infer.parse_args([*common, *guided]))
    assert record["strength"] == 1.0 and record["prior_coverage"] == 0.0
    assert record["prior_weight_in_hole"] == 0.0
    for i in range(2):
        plain = Image.open(tmp_path / "plain" / f"{i}.png")
        assert max_diff(plain, Image.open(tmp_path / "guided" / f"{i}.png")) <= TOLERANCE
