"""Fine-tune Stable Diffusion 2 inpainting on one scene with LoRA (RealFill, Tang et al. 2024).

The references in `<scene>/ref/` and the known part of `<scene>/target/target.png` are learnt
with random masks; the target's hole (white in `target/mask.png`) never contributes. The output
folder gets `pytorch_lora_weights.safetensors` (loadable by any diffusers inpainting pipeline;
with --lora_target full, the whole fine-tuned UNet in `unet/` too) and `realfill_settings.json`,
which `infer.py --model_path` reads.

    accelerate launch train_realfill.py --train_data_dir data/Custom/1 --output_dir runs/1-model
    python train_realfill.py --pretrained_model_name_or_path models/tiny-sd2-inpainting \\
        --train_data_dir data/Custom/1 --output_dir runs/tiny --resolution 64 --max_train_steps 20

Defaults are the paper's recipe: 2,000 steps, batch 16, LoRA rank 8 (alpha 16, dropout 0.1) on
the UNet and text-encoder attention, learning rates 2e-4 / 4e-5, resolution 512.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import json
import logging
import math
import os
import random
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

import realfill_utils as ru

if TYPE_CHECKING:  # torch is imported where it is used: --help and bad input answer at once
    import torch

SCHEMA_VERSION = 1  # of realfill_settings.json
PROMPT_DROPOUT = 0.1  # the paper drops the prompt with p = 0.1 ...
FULL_MASK_PROBABILITY = 0.1  # ... and fills everything (all-ones mask) with p = 0.1
CROP_SCALE = (0.5, 1.0)  # random resized crop: fraction of the image area kept
CROP_RATIO = (3 / 4, 4 / 3)  # and its aspect-ratio range
# Photos are reduced once, at load time, to a short side of SOURCE_FACTOR x the resolution (the
# smallest crop, ~0.6 of it, is then still larger than the resolution: no detail is lost), but
# never below MIN_SOURCE_SIDE, where drawing a batch costs little anyway. Drawn at full size,
# 12 MP phone photos made each batch much slower to draw (perf/results/train_sampler.md).
SOURCE_FACTOR, MIN_SOURCE_SIDE = 2, 1024
MAX_RECTANGLES = 5  # random training masks: union of 1..MAX_RECTANGLES rectangles
PREVIEW_SCHEDULER, PREVIEW_STEPS = "dpmsolver++", 25  # validation previews, not final results
MAX_GRAD_NORM = 1.0
PRECISION_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
VAE_PRECISIONS = ("auto", *PRECISION_DTYPES)

logger = logging.getLogger("realfill")


# ---------------------------------------------------------------------------------------------
# Data: every image decoded once, every batch drawn fresh in the main process (no workers)
# ---------------------------------------------------------------------------------------------
def random_fill_mask(size: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random training mask (size, size), float 1 = fill: a union of random rectangles or, with
    p = 0.5, its complement; with p = FULL_MASK_PROBABILITY everything is filled."""
    import torch

    def uniform(low: float, high: float) -> float:
        return low + (high - low) * torch.rand((), generator=generator).item()

    if torch.rand((), generator=generator).item() < FULL_MASK_PROBABILITY:
        return torch.ones(size, size)
    mask = torch.zeros(size, size)
    count = int(torch.randint(1, MAX_RECTANGLES + 1, (), generator=generator))
    for _ in range(count):
        h, w = int(uniform(0.1, 0.6) * size), int(uniform(0.1, 0.6) * size)
        y, x = int(uniform(0, 1) * (size - h)), int(uniform(0, 1) * (size - w))
        mask[y : y + max(h, 1), x : x + max(w, 1)] = 1.0
    if torch.rand((), generator=generator).item() < 0.5:
        mask = 1.0 - mask
    return mask


def random_crop_box(
    height: int, width: int, generator: torch.Generator | None = None
) -> tuple[int, int, int, int]:
    """(top, left, h, w) of a random crop with area in CROP_SCALE and aspect in CROP_RATIO."""
    import torch

    area = height * width
    log_ratio = (math.log(CROP_RATIO[0]), math.log(CROP_RATIO[1]))
    for _ in range(10):
        scale = CROP_SCALE[0] + (CROP_SCALE[1] - CROP_SCALE[0]) * torch.rand(
            (), generator=generator
        )
        ratio = math.exp(
            log_ratio[0] + (log_ratio[1] - log_ratio[0]) * torch.rand((), generator=generator)
        )
        w = int(round(math.sqrt(area * scale.item() * ratio)))
        h = int(round(math.sqrt(area * scale.item() / ratio)))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (), generator=generator))
            left = int(torch.randint(0, width - w + 1, (), generator=generator))
            return top, left, h, w
    side = min(height, width)  # fallback: the largest centred square
    return (height - side) // 2, (width - side) // 2, side, side


def reduce(stack: torch.Tensor, resolution: int) -> torch.Tensor:
    """(C, H, W) area-filtered to a short side of max(SOURCE_FACTOR x resolution,
    MIN_SOURCE_SIDE) where it is larger; unchanged otherwise."""
    import torch.nn.functional as F

    side = max(SOURCE_FACTOR * resolution, MIN_SOURCE_SIDE)
    height, width = stack.shape[1:]
    if min(height, width) <= side:
        return stack
    scale = side / min(height, width)
    size = (max(side, round(height * scale)), max(side, round(width * scale)))
    return F.interpolate(
        stack[None], size=size, mode="bilinear", antialias=True, align_corners=False
    )[0]


class SceneSampler:
    """The scene's references and target as tensors in memory, drawn into training batches.

    The target's hole is replaced by flat grey at load time, so whatever the file holds there
    can never reach the model, and its `hole` channel is carried so the loss can ignore it.
    """

    def __init__(self, scene: ru.Scene, resolution: int):
        import torch

        self.resolution = resolution
        self.images: list[torch.Tensor] = []  # (3, H, W) float in [-1, 1]
        self.holes: list[torch.Tensor] = []  # (1, H, W) float, 1 = unknown pixel
        target_hole = torch.from_numpy(scene.fill_mask.astype(np.float32))[None]
        pictures = [*scene.references, scene.target]
        for i, picture in enumerate(pictures):
            array = torch.from_numpy(np.asarray(picture, dtype=np.float32).copy())
            image = array.permute(2, 0, 1) / 127.5 - 1.0
            hole = target_hole if i == len(pictures) - 1 else torch.zeros(1, *image.shape[1:])
            image = image * (1.0 - hole)  # grey (0) inside the target's hole
            image, hole = reduce(torch.cat([image, hole]), resolution).split([3, 1])
            hole = (hole > 0).float()  # a pixel touched at all by the hole is unknown ...
            self.images.append(image * (1.0 - hole))  # ... and grey
            self.holes.append(hole)

    def __len__(self) -> int:
        return len(self.images)

    def sample(self, batch_size: int, generator: torch.Generator | None = None) -> dict:
        """A fresh batch: images (B,3,R,R) in [-1,1], fill_mask (B,1,R,R) 1 = masked for the
        model, hole (B,1,R,R) 1 = pixel unknown in the scene (only ever set for the target)."""
        import torch
        import torch.nn.functional as F

        size = self.resolution
        indices = torch.randint(0, len(self), (batch_size,), generator=generator)
        images, fill_masks, holes = [], [], []
        for index in indices.tolist():
            image, hole = self.images[index], self.holes[index]
            top, left, h, w = random_crop_box(image.shape[1], image.shape[2], generator)
            crop = torch.cat([image, hole])[None, :, top : top + h, left : left + w]
            crop = F.interpolate(
                crop, size=(size, size), mode="bilinear", antialias=True, align_corners=False
            )[0]
            # A pixel touched at all by the hole counts as unknown.
            hole = (crop[3:] > 0).float()
            images.append(crop[:3].clamp(-1, 1))
            holes.append(hole)
            # Unknown pixels are always masked for the model: they must not be shown to it.
            fill_masks.append(torch.maximum(random_fill_mask(size, generator)[None], hole))
        return {
            "images": torch.stack(images),
            "fill_mask": torch.stack(fill_masks),
            "hole": torch.stack(holes),
        }


def masked_mse(
    prediction: torch.Tensor, target: torch.Tensor, weight: torch.Tensor
) -> torch.Tensor:
    """Mean squared error over the weighted elements only (weight broadcast over channels),
    normalised by the weight sum, not by the element count."""
    weight = weight.expand_as(prediction).float()
    squared = (prediction.float() - target.float()) ** 2
    return (squared * weight).sum() / weight.sum().clamp_min(1.0)


def known_latent_weight(hole: torch.Tensor, latent_size: tuple[int, int]) -> torch.Tensor:
    """Loss weight at latent resolution: 1 where the whole latent cell is known, else 0."""
    import torch.nn.functional as F

    return 1.0 - F.adaptive_max_pool2d(hole, latent_size)


# ---------------------------------------------------------------------------------------------
# One training step
# ---------------------------------------------------------------------------------------------
def training_models(
    components: ru.Components, device, weight_dtype, noise_offset: float = 0.0
) -> dict:
    """What `training_loss` needs: the three networks, a DDPM noise schedule, device, dtype,
    and the offset-noise strength (0 = plain Gaussian noise)."""
    from diffusers import DDPMScheduler

    return {
        "noise_offset": noise_offset,
        "vae": components.vae,
        "unet": components.unet,
        "text_encoder": components.text_encoder,
        "noise_scheduler": DDPMScheduler.from_config(components.scheduler_config),
        "device": device,
        "weight_dtype": weight_dtype,
    }


def encode_prompts(text_encoder, input_ids: torch.Tensor) -> torch.Tensor:
    """The text encoder's hidden states for a batch of token ids, each distinct prompt encoded
    once (a batch holds at most two: the scene's and the dropped one) and indexed back; the
    gradient still sums over every sample that used it. The LoRA dropout mask is then shared
    by the samples of one prompt within a step."""
    import torch

    unique_ids, which = torch.unique(input_ids, dim=0, return_inverse=True)
    return text_encoder(unique_ids, return_dict=False)[0][which]


def training_loss(batch: dict, models: dict, prompt_ids: torch.Tensor, empty_ids: torch.Tensor):
    """Noise-prediction loss of one batch (on the models' device, in their dtype).

    The UNet sees noisy latents + the training mask + latents of the masked image, exactly as
    StableDiffusionInpaintPipeline feeds it at inference.
    """
    import torch
    import torch.nn.functional as F

    vae, unet, text_encoder, noise_scheduler = (
        models["vae"],
        models["unet"],
        models["text_encoder"],
        models["noise_scheduler"],
    )
    device, dtype = models["device"], models["weight_dtype"]
    images = batch["images"].to(device, dtype)
    fill_mask = batch["fill_mask"].to(device, dtype)
    batch_size = images.shape[0]
    scaling = vae.config.scaling_factor
    # the VAE computes in its own dtype (vae_dtype), also inside --mixed_precision's autocast
    own_dtype = torch.autocast(device.type, enabled=False) if vae.dtype != dtype else None
    with torch.no_grad(), own_dtype or contextlib.nullcontext():
        # One VAE call for both; the masked image is encoded by its posterior mean, as
        # infer.py does, so the conditioning is deterministic in training and sampling alike.
        masked = images * (fill_mask < 0.5)
        pixels = torch.cat([images, masked]).to(vae.dtype, memory_format=torch.channels_last)
        posterior = vae.encode(pixels).latent_dist
        latents = posterior.sample()[:batch_size].to(dtype) * scaling
        masked_latents = posterior.mode()[batch_size:].to(dtype) * scaling
    latent_size = latents.shape[-2:]
    mask_latent = F.interpolate(fill_mask, size=latent_size)  # nearest, as the pipeline does
    noise = torch.randn_like(latents)
    if models.get("noise_offset"):  # a per-sample, per-channel shift: mean colours can move
        noise = noise + models["noise_offset"] * torch.randn(
            (*latents.shape[:2], 1, 1), device=device, dtype=latents.dtype
        )
    timesteps = torch.randint(
        0, noise_scheduler.config.num_train_timesteps, (batch_size,), device=device
    )
    noisy = noise_scheduler.add_noise(latents, noise, timesteps)
    drop_prompt = torch.rand(batch_size, device=device) < PROMPT_DROPOUT
    input_ids = torch.where(drop_prompt[:, None], empty_ids.to(device), prompt_ids.to(device))
    hidden = encode_prompts(text_encoder, input_ids)
    model_input = torch.cat([noisy, mask_latent, masked_latents], dim=1)
    prediction = unet(model_input, timesteps, hidden, return_dict=False)[0]
    if noise_scheduler.config.prediction_type == "v_prediction":
        target = noise_scheduler.get_velocity(latents, noise, timesteps)
    else:
        target = noise
    weight = known_latent_weight(batch["hole"].to(device, torch.float32), tuple(latent_size))
    return masked_mse(prediction, target, weight)


# ---------------------------------------------------------------------------------------------
# Checkpoints: everything needed to continue exactly, written atomically
# ---------------------------------------------------------------------------------------------
def trainable_params(models) -> dict[str, torch.nn.Parameter]:
    """The LoRA parameters of {prefix: model}, named "<prefix>.<parameter name>"."""
    return {
        f"{prefix}.{name}": param
        for prefix, model in models.items()
        for name, param in model.named_parameters()
        if param.requires_grad
    }


def trainable_state(models) -> dict[str, torch.Tensor]:
    return {name: param.detach().cpu().clone() for name, param in trainable_params(models).items()}


def rng_state() -> dict:
    """Every RNG's state as tensors, ints and lists (loadable with weights_only=True)."""
    import torch

    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": [version, list(internal), gauss],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    import torch

    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def list_checkpoints(output_dir: Path) -> list[Path]:
    """Finished checkpoints, oldest first (partial ones start with a dot and are skipped)."""
    folder = output_dir / "checkpoints"
    found = folder.glob("checkpoint-*") if folder.is_dir() else []
    return sorted((p for p in found if p.name.split("-")[-1].isdigit()), key=checkpoint_step)


def checkpoint_step(path: Path) -> int:
    return int(path.name.split("-")[-1])


def save_checkpoint(
    accelerator, output_dir: Path, step: int, lora_models, optimizer, scheduler, limit,
    fingerprint: str = "", vae_dtype_name: str = "",
):  # fmt: skip
    """Write checkpoints/checkpoint-<step>/ atomically: a partial folder renamed when complete."""
    import torch

    final = output_dir / "checkpoints" / f"checkpoint-{step}"
    partial = final.with_name(f".{final.name}.partial")
    if accelerator.is_main_process:
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
    accelerator.wait_for_everyone()
    torch.save(rng_state(), partial / f"rng_state_{accelerator.process_index}.pt")
    if accelerator.is_main_process:
        torch.save(
            {
                "step": step,
                "lora": trainable_state(lora_models),
                "optimizer": optimizer.state_dict(),
                "lr_scheduler": scheduler.state_dict(),
                "num_processes": accelerator.num_processes,
            },
            partial / "state.pt",
        )
        ru.atomic_write_json(
            {"fingerprint": fingerprint, "vae_dtype": vae_dtype_name}, partial / INPUTS_FILE
        )
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        shutil.rmtree(final, ignore_errors=True)
        partial.rename(final)
        for old in list_checkpoints(output_dir)[:-limit] if limit > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def load_checkpoint(accelerator, path: Path, lora_models, optimizer, scheduler) -> int:
    """Restore LoRA weights, optimizer, LR schedule and this process's RNG; return the step."""
    import torch

    state = load_plain(path / "state.pt")
    if state["num_processes"] != accelerator.num_processes:
        raise ru.SceneError(
            f"{path} was written by {state['num_processes']} process(es), this run has "
            f"{accelerator.num_processes}: resume with the same number of processes"
        )
    params = trainable_params(lora_models)
    if params.keys() != state["lora"].keys():
        raise ru.SceneError(
            f"{path} holds LoRA weights of another shape (different --lora_rank or base model): "
            "resume with the settings it was trained with, or start a new --output_dir"
        )
    with torch.no_grad():
        for name, param in params.items():
            param.copy_(state["lora"][name])
    saved = state["optimizer"]
    for group, current in zip(saved["param_groups"], optimizer.param_groups, strict=False):
        for key in ("fused", "foreach"):  # how this optimizer steps, not what it learned: a
            if key in current:  # state saved by a per-tensor AdamW loads into a fused one
                group[key] = current[key]
    optimizer.load_state_dict(saved)
    scheduler.load_state_dict(state["lr_scheduler"])
    set_rng_state(load_plain(path / f"rng_state_{accelerator.process_index}.pt"))
    return state["step"]


def load_plain(path: Path) -> dict:
    """A checkpoint file of tensors, numbers and lists, loaded without unpickling objects."""
    import pickle

    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise ru.SceneError(
            f"{path} holds pickled objects (a checkpoint of an older version of this script): "
            "it cannot be loaded safely; start a new --output_dir, or delete its checkpoints/"
        ) from None


INPUTS_FILE = "inputs.json"  # in a checkpoint: the fingerprint of the run that wrote it
NOT_IN_FINGERPRINT = {  # flags that change where and how often things are written, not weights
    "output_dir", "logging_dir", "resume_from_checkpoint", "checkpointing_steps",
    "checkpoints_total_limit", "validation_steps", "num_validation_images", "report_to",
    "push_to_hub", "hub_model_id", "save_merged_pipeline", "train_data_dir",
    "vae_precision",  # what it resolves to is in each checkpoint and checked at resume
}  # fmt: skip


def run_fingerprint(args: argparse.Namespace) -> str:
    """sha256 of what decides the weights a run ends with: the scene's content and every
    training setting. A checkpoint of another fingerprint is never resumed."""
    import hashlib

    settings = {k: v for k, v in sorted(vars(args).items()) if k not in NOT_IN_FINGERPRINT}
    blob = json.dumps([ru.scene_sha256(args.train_data_dir), settings], default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def checkpoint_fingerprint(path: Path) -> str | None:
    """The fingerprint a checkpoint was written with; None for one written before they were."""
    return _checkpoint_input(path, "fingerprint")


def _checkpoint_input(path: Path, key: str):
    try:
        return json.loads((path / INPUTS_FILE).read_text())[key]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def check_resumed_vae_dtype(path: Path, vae_weights, weight_dtype, choice: str) -> None:
    """SceneError if the checkpoint's VAE encoded in another dtype than this run's would (a
    resume on a CPU without native bf16, or of a run from before --vae_precision, whose VAE
    had the weights' dtype): the two halves of the run would differ."""
    recorded = _checkpoint_input(path, "vae_dtype") or dtype_name(weight_dtype)
    if recorded != dtype_name(vae_weights):
        flag = {v: k for k, v in PRECISION_DTYPES.items()}.get(recorded, recorded)
        raise ru.SceneError(
            f"{path} was trained with the VAE in {recorded}, but --vae_precision {choice} gives "
            f"{dtype_name(vae_weights)} here: resume with --vae_precision {flag}, or start over "
            "in another --output_dir"
        )


def resolve_resume(spec: str | None, output_dir: Path, fingerprint: str) -> Path | None:
    """The checkpoint to resume from: for 'latest', the newest one written by a run with the
    same scene and settings (a run that must start over, e.g. a ReFill round on a new scene,
    never continues another's); a named one must match too."""
    if not spec:
        return None
    if spec == "latest":
        found = [c for c in list_checkpoints(output_dir)
                 if checkpoint_fingerprint(c) in (None, fingerprint)]  # fmt: skip
        return found[-1] if found else None
    path = Path(spec)
    if not (path / "state.pt").is_file():
        raise ru.SceneError(
            f"{path}: not a checkpoint folder (no state.pt); pass a checkpoints/checkpoint-<step> "
            "folder or 'latest'"
        )
    if checkpoint_fingerprint(path) not in (None, fingerprint):
        raise ru.SceneError(
            f"{path} was written by a run with another scene or other settings: resume with "
            "exactly those, or start over without --resume_from_checkpoint"
        )
    return path


# ---------------------------------------------------------------------------------------------
# Validation previews with the in-memory models
# ---------------------------------------------------------------------------------------------
def run_validation(accelerator, components, scene, args, step: int, weight_dtype) -> None:
    """Complete the ORIGINAL target with the current models; log and save a preview grid."""
    import torch
    from PIL import Image

    unet, text_encoder = (
        accelerator.unwrap_model(m) for m in (components.unet, components.text_encoder)
    )
    vae = components.vae
    if vae.dtype != weight_dtype:  # a bf16 VAE beside fp32 weights (vae_dtype): the pipeline
        vae = copy.deepcopy(vae).to(weight_dtype)  # decodes in the latents' dtype (an upcast)
    view = ru.Components(
        components.path,
        components.tokenizer,
        text_encoder,
        vae,
        unet,
        components.scheduler_config,
    )
    unet.eval()
    text_encoder.eval()
    device = accelerator.device
    devices = [device] if device.type == "cuda" else []
    # Validation must not move the training RNG: a run with previews equals one without.
    with (
        torch.random.fork_rng(devices=devices),
        torch.no_grad(),
        torch.autocast(device.type, dtype=weight_dtype, enabled=weight_dtype != torch.float32),
    ):
        pipe = ru.make_pipeline(view, PREVIEW_SCHEDULER)
        seeds = [args.seed + i for i in range(args.num_validation_images)]
        raw = ru.generate(
            pipe,
            scene.target,
            scene.fill_mask,
            seeds,
            prompt=args.prompt,
            resolution=args.resolution,
            num_inference_steps=PREVIEW_STEPS,
            multiple=components.size_multiple,
        )
    unet.train()
    text_encoder.train()
    completions = [ru.composite(r, scene.target, scene.fill_mask, ru.FEATHER_RADIUS) for r in raw]
    grid = Image.new("RGB", (scene.target.width * len(completions), scene.target.height))
    for i, completion in enumerate(completions):
        grid.paste(completion, (i * scene.target.width, 0))
    ru.atomic_save_image(grid, args.output_dir / "validation" / f"step-{step:06d}.png")
    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard":
            stack = np.stack([np.asarray(c) for c in completions])
            tracker.writer.add_images("validation", stack, step, dataformats="NHWC")


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------
SCRIPT = "train_realfill.py"  # the owner recorded in the output folder's manifest
MODEL_CARD = "README.md"  # the Hugging Face model card written next to the LoRA
MERGED_PIPELINE = ["model_index.json", "unet", "text_encoder", "vae", "tokenizer", "scheduler"]


def output_entries(args: argparse.Namespace) -> list[str]:
    """The top-level names this script writes into --output_dir."""
    names = [ru.LORA_FILE, ru.SETTINGS_FILE, MODEL_CARD, "checkpoints", "validation"]
    if args.lora_target == ru.FULL_TARGET:
        names.append(ru.FULL_UNET_DIR)
    if args.logging_dir.parts:  # relative to --output_dir, as in diffusers' scripts
        names.append(args.logging_dir.parts[0])
    return names + (MERGED_PIPELINE if args.save_merged_pipeline else [])


def check_inputs(args: argparse.Namespace) -> tuple[ru.Scene, Path | None]:
    """Check everything a user can get wrong (scene, output folder, resume point, base model)
    without importing torch (but to see whether fp16 has a GPU); return the scene and the
    checkpoint to resume from.

    The output folder may not overlap the scene, nor hold files this script did not write.
    """
    scene = ru.load_scene(args.train_data_dir)
    refuse_fp16_without_gpu(args)
    multiple = ru.config_size_multiple(args.pretrained_model_name_or_path)
    if args.resolution < multiple or args.resolution % multiple:
        near = max(multiple, args.resolution // multiple * multiple)
        raise ru.SceneError(
            f"--resolution {args.resolution} is not a positive multiple of {multiple}, which "
            f"this model's VAE and UNet need (e.g. {near})"
        )
    if args.logging_dir.is_absolute() or ".." in args.logging_dir.parts:
        raise ru.SceneError(
            f"--logging_dir {args.logging_dir}: the logs go inside --output_dir, so pass a "
            "relative folder name such as logs"
        )
    args.output_dir = ru.claim_output_dir(
        args.output_dir,
        SCRIPT,
        output_entries(args),
        {"the scene": args.train_data_dir},
        record=ru.is_main_process(),
    )
    args.fingerprint = run_fingerprint(args)
    resume = resolve_resume(args.resume_from_checkpoint, args.output_dir, args.fingerprint)
    if args.push_to_hub:
        check_hub_access()
    return scene, resume


def train(args: argparse.Namespace, checked: tuple | None = None) -> Path:
    """Train LoRA adapters on one scene; return the output folder. `checked`: what
    check_inputs(args) returned, when the caller has already called it."""
    import torch
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration, set_seed
    from diffusers.optimization import get_scheduler
    from diffusers.training_utils import cast_training_params
    from tqdm.auto import tqdm

    scene, resume = checked or check_inputs(args)
    accelerator = Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        log_with=None if args.report_to == "none" else args.report_to,
        project_config=ProjectConfiguration(
            project_dir=args.output_dir, logging_dir=args.output_dir / args.logging_dir
        ),
    )
    device = accelerator.device
    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(
        accelerator.mixed_precision, torch.float32
    )
    if args.allow_tf32 and device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    set_seed(args.seed, device_specific=True)  # each process draws its own batches
    vae_weights = vae_dtype(args.vae_precision, device, weight_dtype)
    if resume is not None:
        check_resumed_vae_dtype(resume, vae_weights, weight_dtype, args.vae_precision)

    components = ru.load_components(args.pretrained_model_name_or_path)
    if args.resolution % components.size_multiple:
        raise ru.SceneError(
            f"--resolution {args.resolution} is not a multiple of {components.size_multiple}, "
            "which this model's VAE and UNet need"
        )
    vae, unet, text_encoder = components.vae, components.unet, components.text_encoder
    for model in (vae, unet, text_encoder):
        model.requires_grad_(False)
    ru.add_lora(
        unet, text_encoder, args.lora_rank, args.lora_alpha, args.lora_dropout, args.lora_target
    )
    vae.to(device, vae_weights, memory_format=torch.channels_last)  # faster encoding on the CPU
    # a UNet trained whole keeps fp32 master weights (autocast computes in weight_dtype), so
    # its starting point is not the base rounded to half precision
    unet.to(device, torch.float32 if args.lora_target == ru.FULL_TARGET else weight_dtype)
    text_encoder.to(device, weight_dtype)
    cast_training_params([unet, text_encoder], dtype=torch.float32)  # LoRA weights stay fp32
    if args.enable_xformers_memory_efficient_attention:
        enable_xformers(unet, device)
    if args.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
        # transformers 5 renamed it; the old name still works but warns
        enable = getattr(text_encoder, "activation_checkpointing_enable", None)
        (enable or text_encoder.gradient_checkpointing_enable)()

    param_groups = [
        {
            "params": [p for p in unet.parameters() if p.requires_grad],
            "lr": args.unet_learning_rate,
        },
        {
            "params": [p for p in text_encoder.parameters() if p.requires_grad],
            "lr": args.text_encoder_learning_rate,
        },
    ]
    optimizer = make_optimizer(param_groups, args.use_8bit_adam, args.adam_weight_decay)
    scheduler_name = args.lr_scheduler
    if scheduler_name == "constant" and args.lr_warmup_steps > 0:
        scheduler_name = "constant_with_warmup"
        if accelerator.is_main_process:
            print(f"--lr_scheduler constant with {args.lr_warmup_steps} warmup steps: warming up")
    lr_scheduler = get_scheduler(
        scheduler_name,
        optimizer=optimizer,
        num_warmup_steps=args.lr_warmup_steps,
        num_training_steps=args.max_train_steps,
    )
    unet, text_encoder, optimizer = accelerator.prepare(unet, text_encoder, optimizer)
    components.unet, components.text_encoder = unet, text_encoder
    lora_models = {
        "unet": accelerator.unwrap_model(unet),
        "text_encoder": accelerator.unwrap_model(text_encoder),
    }
    prompt_ids, empty_ids = (
        tokenize(components.tokenizer, args.prompt),
        tokenize(components.tokenizer, ""),
    )
    models = training_models(components, device, weight_dtype, args.noise_offset)
    sampler = SceneSampler(scene, args.resolution)

    step = 0
    stale = [c for c in list_checkpoints(args.output_dir)
             if checkpoint_fingerprint(c) not in (None, args.fingerprint)]  # fmt: skip
    if stale and accelerator.is_main_process:  # its own files, from a run of other inputs
        print(f"note: removing {len(stale)} checkpoint(s) of a run with another scene or other "
              "settings; they would mix with this run's")  # fmt: skip
        for old in stale:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()
    if resume is not None:
        step = load_checkpoint(accelerator, resume, lora_models, optimizer, lr_scheduler)
        if accelerator.is_main_process:
            print(f"resumed from {resume} at step {step}")
    if accelerator.is_main_process and args.report_to != "none":
        accelerator.init_trackers("realfill", config=tracker_config(args))
    unet.train()
    text_encoder.train()
    progress = tqdm(
        total=args.max_train_steps,
        initial=step,
        desc="training",
        disable=not accelerator.is_main_process,
        dynamic_ncols=True,
    )
    while step < args.max_train_steps:
        with accelerator.accumulate(unet, text_encoder):
            batch = sampler.sample(args.train_batch_size)
            with accelerator.autocast():
                loss = training_loss(batch, models, prompt_ids, empty_ids)
            accelerator.backward(loss)
            if accelerator.sync_gradients:
                accelerator.clip_grad_norm_(
                    [p for group in param_groups for p in group["params"]], MAX_GRAD_NORM
                )
            optimizer.step()
            if accelerator.sync_gradients:
                lr_scheduler.step()
            optimizer.zero_grad(set_to_none=args.set_grads_to_none)
        if not accelerator.sync_gradients:
            continue
        step += 1
        progress.update(1)
        loss_value = accelerator.reduce(loss.detach(), reduction="mean").item()
        progress.set_postfix(loss=f"{loss_value:.4f}", lr=f"{lr_scheduler.get_last_lr()[0]:.2e}")
        accelerator.log(
            {
                "loss": loss_value,
                "lr/unet": lr_scheduler.get_last_lr()[0],
                "lr/text_encoder": lr_scheduler.get_last_lr()[1],
            },
            step=step,
        )
        if args.checkpointing_steps and step % args.checkpointing_steps == 0:
            save_checkpoint(
                accelerator,
                args.output_dir,
                step,
                lora_models,
                optimizer,
                lr_scheduler,
                args.checkpoints_total_limit,
                args.fingerprint,
                dtype_name(vae_weights),
            )
        if (
            args.validation_steps
            and args.num_validation_images
            and step % args.validation_steps == 0
            and accelerator.is_main_process
        ):
            run_validation(accelerator, components, scene, args, step, weight_dtype)
    progress.close()
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        export(args, lora_models, vae_weights)
        full = args.lora_target == ru.FULL_TARGET
        print(
            f"LoRA written to {args.output_dir / ru.LORA_FILE}"
            + (f", the fine-tuned UNet to {args.output_dir / ru.FULL_UNET_DIR}" if full else "")
        )
        if args.push_to_hub:
            print(f"uploaded to {push_to_hub(args)}")
    accelerator.end_training()
    return args.output_dir


def tokenize(tokenizer, text: str) -> torch.Tensor:
    """Token ids (1, 77) padded the way the pipeline pads its prompt."""
    return tokenizer(
        text,
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids


def enable_xformers(unet, device) -> None:
    try:
        from diffusers.utils.import_utils import is_xformers_available

        if device.type != "cuda" or not is_xformers_available():
            raise RuntimeError("needs a CUDA GPU and the xformers package")
        unet.enable_xformers_memory_efficient_attention()
    except Exception as err:  # any failure leaves the default attention in place
        print(f"xformers not used ({err}); using PyTorch scaled-dot-product attention")


def vae_dtype(choice: str, device, weight_dtype):
    """The frozen VAE's dtype. `auto`: the frozen weights' dtype, except bf16 on a CPU with
    native bf16 instructions, where encoding is much faster than in fp32 and the latents differ
    by much less than the training noise at all but the smallest timesteps
    (perf/bench_train.py --part precision measures both)."""
    import torch

    if choice != "auto":
        return getattr(torch, PRECISION_DTYPES[choice])
    if device.type == "cpu" and weight_dtype == torch.float32 and cpu_has_native_bf16():
        return torch.bfloat16
    return weight_dtype


def refuse_fp16_without_gpu(args: argparse.Namespace) -> None:
    """SceneError for fp16 (weights or VAE) where no CUDA GPU is visible; torch is imported
    only when fp16 was asked for."""
    mixed = args.mixed_precision or os.environ.get("ACCELERATE_MIXED_PRECISION", "no")
    half = {"--mixed_precision": (mixed, "bf16 or no"),
            "--vae_precision": (args.vae_precision, "bf16 or fp32")}  # fmt: skip
    for flag, (value, instead) in half.items():
        if value == "fp16":
            import torch
            from accelerate.utils import parse_flag_from_env

            if parse_flag_from_env("ACCELERATE_USE_CPU"):  # accelerate launch --cpu
                raise ru.SceneError(
                    f"{flag} fp16 needs a CUDA GPU, and ACCELERATE_USE_CPU puts this run on the "
                    f"CPU; there use {flag} {instead}"
                )
            if not torch.cuda.is_available():
                raise ru.SceneError(
                    f"{flag} fp16 needs a CUDA GPU; on the CPU use {flag} {instead}"
                )


def dtype_name(dtype) -> str:
    return str(dtype).removeprefix("torch.")


def cpu_has_native_bf16() -> bool:
    """Whether oneDNN runs bf16 natively on this CPU (AVX512-BF16 or AMX); elsewhere bf16 is
    emulated and slower than fp32."""
    import torch

    try:
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except (AttributeError, RuntimeError):  # private helpers of torch.cpu
        return False


def make_optimizer(param_groups, use_8bit_adam: bool, weight_decay: float):
    import torch

    if use_8bit_adam:
        try:
            import bitsandbytes as bnb
        except ImportError:
            raise ru.SceneError(
                "--use_8bit_adam needs bitsandbytes: pip install -r requirements.txt"
            ) from None
        return bnb.optim.AdamW8bit(param_groups, weight_decay=weight_decay)
    params = [p for group in param_groups for p in group["params"]]
    # one fused kernel for all parameters instead of a loop of small ops per tensor
    fused = all(p.device.type in ("cpu", "cuda") and p.dtype == torch.float32 for p in params)
    return torch.optim.AdamW(param_groups, weight_decay=weight_decay, fused=fused or None)


def tracker_config(args) -> dict:
    return {k: (str(v) if isinstance(v, Path) or v is None else v) for k, v in vars(args).items()}


def export(args, lora_models, vae_weights) -> None:
    """Write the LoRA file (and a UNet trained whole), optionally a merged pipeline, then the
    settings file (last, so its presence means the run finished)."""
    full = args.lora_target == ru.FULL_TARGET
    if full and not args.save_merged_pipeline:  # a merged pipeline writes the same unet/
        ru.save_full_unet(args.output_dir, lora_models["unet"])
    ru.save_lora(args.output_dir, lora_models["unet"], lora_models["text_encoder"])
    base = Path(args.pretrained_model_name_or_path).expanduser()
    base_model = str(base.resolve()) if base.exists() else args.pretrained_model_name_or_path
    if args.save_merged_pipeline:
        from diffusers import StableDiffusionInpaintPipeline

        pipe = StableDiffusionInpaintPipeline.from_pretrained(
            ru.resolve_model_path(base_model), safety_checker=None, requires_safety_checker=False
        )
        if full:
            pipe.unet = lora_models["unet"]
        pipe.load_lora_weights(args.output_dir)
        pipe.fuse_lora()
        pipe.unload_lora_weights()
        pipe.save_pretrained(args.output_dir)
    settings = {
        "schema_version": SCHEMA_VERSION,
        "base_model": base_model,
        "resolution": args.resolution,
        "prompt": args.prompt,
        "lora_rank": args.lora_rank,
        "lora_alpha": args.lora_alpha,
        "lora_target": args.lora_target,
        "vae_dtype": dtype_name(vae_weights),  # what --vae_precision chose
        "args": tracker_config(args),
    }
    write_model_card(args, base_model, scene_name=Path(args.train_data_dir).resolve().name)
    ru.atomic_write_json(settings, args.output_dir / ru.SETTINGS_FILE)


def write_model_card(args, base_model: str, scene_name: str) -> None:
    """README.md next to the LoRA, with the hub's usual metadata, by diffusers' own helpers."""
    from diffusers.utils.hub_utils import MODEL_CARD_TEMPLATE_PATH, populate_model_card
    from huggingface_hub import ModelCard, ModelCardData

    full = args.lora_target == ru.FULL_TARGET
    unet_part = (
        "The whole UNet (in `unet/`"
        if full
        else f"LoRA adapters (UNet: {args.lora_target}, rank {args.lora_rank}"
    )
    use = (
        "`StableDiffusionInpaintPipeline` with its `unet` replaced by "
        "`UNet2DConditionModel.from_pretrained(<this folder>, subfolder='unet')`, then "
        "`load_lora_weights(<this folder>)`"
        if full
        else "`StableDiffusionInpaintPipeline` via `load_lora_weights(<this folder>)`"
    )
    description = (
        f"# RealFill LoRA for the scene `{scene_name}`\n\n"
        f"{unet_part}; text-encoder LoRA on the attention, rank {args.lora_rank}) fine-tuned "
        "with RealFill (Tang et al., SIGGRAPH 2024) on the reference "
        f"photos and the known part of the target of one scene, on top of `{base_model}`.\n\n"
        f"Recipe: {args.max_train_steps} steps of {args.train_batch_size} x "
        f"{args.gradient_accumulation_steps} samples at {args.resolution} px, learning rates "
        f"{args.unet_learning_rate:g} (UNet) / {args.text_encoder_learning_rate:g} (text "
        f"encoder), prompt `{args.prompt}`. Every setting is in `{ru.SETTINGS_FILE}`.\n\n"
        "Use it with `infer.py --model_path <this folder>`, or with any diffusers "
        f"{use}. The scene's images are not included."
    )
    # what diffusers' load_or_create_model_card does for a new training, without its hub look-up
    card = ModelCard.from_template(
        card_data=ModelCardData(
            license="mit",  # this code's licence; the base model's own licence also applies
            library_name="diffusers",
            base_model=base_model,
            instance_prompt=args.prompt,
        ),
        template_path=MODEL_CARD_TEMPLATE_PATH,
        model_description=description,
    )
    card = populate_model_card(
        card, tags=["realfill", "lora", "inpainting", "stable-diffusion", "diffusers"]
    )
    with ru.atomic_path(args.output_dir / MODEL_CARD) as tmp:
        card.save(tmp)


# ---------------------------------------------------------------------------------------------
# The Hugging Face Hub (--push_to_hub): the token comes from the environment or the usual login
# ---------------------------------------------------------------------------------------------
def check_hub_access() -> None:
    """Raise SceneError now, not after hours of training, if an upload cannot happen."""
    from huggingface_hub import constants, get_token

    if constants.HF_HUB_OFFLINE:
        raise ru.SceneError(
            "--push_to_hub needs the network but HF_HUB_OFFLINE is set: unset it, or drop "
            "--push_to_hub and upload the output folder later"
        )
    if get_token() is None:
        raise ru.SceneError(
            "--push_to_hub needs a Hugging Face token: set HF_TOKEN or run `hf auth login` "
            "(tokens are never passed on the command line)"
        )


def push_to_hub(args) -> str:
    """Upload the LoRA, its settings and model card (not checkpoints, logs or previews) to
    --hub_model_id (default: the output folder's name) under the logged-in account."""
    from huggingface_hub import create_repo, upload_folder

    repo_id = create_repo(args.hub_model_id or args.output_dir.name, exist_ok=True).repo_id
    upload_folder(
        repo_id=repo_id,
        folder_path=args.output_dir,
        commit_message="RealFill LoRA",
        allow_patterns=[ru.LORA_FILE, ru.SETTINGS_FILE, MODEL_CARD, f"{ru.FULL_UNET_DIR}/*"],
    )
    return f"https://huggingface.co/{repo_id}"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=ru.HelpFormatter)
    p.add_argument(
        "--train_data_dir",
        type=Path,
        required=True,
        help="scene folder: ref/*, target/target.png, target/mask.png (white = fill)",
    )
    p.add_argument("--output_dir", type=Path, required=True, help="gets the LoRA and its files")
    p.add_argument("--prompt", default=ru.PROMPT, help="the paper's 'a photo of [V]'")
    ru.add_recipe_flags(p, TRAIN_RECIPE, defaults=ru.Recipe())  # the paper's recipe
    p.add_argument(
        "--pad_to_full_batch",
        action="store_true",
        help="accepted for old commands: every batch is already full",
    )
    p.add_argument(
        "--gradient_accumulation_steps", type=int, default=1, help="steps per optimizer update"
    )
    p.add_argument("--use_8bit_adam", action="store_true", help="bitsandbytes AdamW8bit")
    p.add_argument(
        "--enable_xformers_memory_efficient_attention",
        action="store_true",
        help="CUDA + xformers only; otherwise PyTorch SDPA (the default) is used",
    )
    p.add_argument(
        "--gradient_checkpointing", action="store_true", help="less memory, about 20-30%% slower"
    )
    p.add_argument("--set_grads_to_none", action="store_true", help="a little less memory")
    p.add_argument("--allow_tf32", action="store_true", help="Ampere and newer GPUs")
    p.add_argument(
        "--vae_precision",
        choices=VAE_PRECISIONS,
        default="auto",
        help="dtype of the frozen VAE, which only encodes the training images; auto: "
        "--mixed_precision's, except bf16 on a CPU with native bf16 (faster there)",
    )
    p.add_argument("--checkpointing_steps", type=int, default=200, help="0 = never")
    p.add_argument(
        "--checkpoints_total_limit",
        type=int,
        default=3,
        help="keep the newest N checkpoints; 0 = keep all",
    )
    p.add_argument(
        "--resume_from_checkpoint",
        default=None,
        help="'latest' (starts fresh if there is none) or a checkpoint folder",
    )
    p.add_argument("--validation_steps", type=int, default=100, help="0 = never")
    p.add_argument("--num_validation_images", type=int, default=4, help="previews per validation")
    p.add_argument(
        "--report_to", choices=["tensorboard", "none"], default="tensorboard", help="logger"
    )
    p.add_argument(
        "--save_merged_pipeline",
        action="store_true",
        help="also write a full merged pipeline (unet/, text_encoder/, ...), ~5 GB",
    )
    p.add_argument(
        "--num_train_epochs",
        type=int,
        default=None,
        help="accepted for the original project's commands, NO effect: batches are drawn "
        "fresh every step, so --max_train_steps alone sets the length",
    )
    p.add_argument(
        "--logging_dir",
        type=Path,
        default=Path("logs"),
        help="TensorBoard logs, relative to --output_dir",
    )
    p.add_argument(
        "--push_to_hub",
        action="store_true",
        help="upload the LoRA and its model card when done; the token comes from HF_TOKEN or "
        "`hf auth login`, checked before training starts",
    )
    p.add_argument(
        "--hub_model_id", default=None, help="repository to push to; default: --output_dir's name"
    )
    args = p.parse_args(argv)
    for name in ("train_batch_size", "max_train_steps", "lora_rank", "gradient_accumulation_steps"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be at least 1")
    return args


# The recipe's fields that are this script's flags (all but the sampling ones).
TRAIN_RECIPE = [f.name for f in dataclasses.fields(ru.Recipe) if f.name not in ru.Recipe.INFERENCE]


def main(argv=None) -> int:
    logging.basicConfig(format="%(message)s", level=logging.INFO)
    args = parse_args(argv)

    def check_and_train():
        checked = check_inputs(args)  # before torch: bad input is answered at once
        main_process = ru.is_main_process()
        with ru.output_lock(args.output_dir, SCRIPT) if main_process else contextlib.nullcontext():
            ru.quiet_libraries()
            train(args, checked)

    return ru.run_main(
        check_and_train,
        interrupted="interrupted; continue with --resume_from_checkpoint latest",
    )


if __name__ == "__main__":
    sys.exit(main())
