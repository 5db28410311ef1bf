"""Train the toy base model: a small SD2-inpainting-shaped pipeline, on the CPU, offline.

The toy model has every part of Stable Diffusion 2 inpainting (VAE, 9-channel UNet with
cross-attention, CLIP text encoder, the real SD2 tokenizer), small enough to commit. It learns
generic inpainting from an endless stream of images that no example scene contains: procedural
"dead leaves" pictures (occluding shapes of all sizes, natural colour palettes, gradients and
textures: the statistics of natural images without any photo) mixed with the photos that
scikit-image ships and that no example scene uses (`make_example_scenes.RESERVED`).
Training has two stages, as Stable Diffusion's had:

1. the VAE (reconstruction loss + a small KL term); its latents are then centred and scaled per
   channel, folded into `quant_conv` / `post_quant_conv` so no pipeline code changes; then,
   with --decoder_steps (off by default), the decoder alone is refined on recoloured images
   (hues turned, saturation changed) with a loss on each region's mean colour as well, against
   the VAE's colour cast (the encoder, hence the latents, stay as they were);
2. the UNet on the inpainting objective, with the VAE and the text encoder frozen, through the
   same `training_loss` and random masks that RealFill fine-tuning uses, under a zero-terminal-
   SNR noise schedule with v-prediction (Lin et al. 2024), so the start noise carries no colour
   and the colour must come from the known region.

It then measures the model (VAE reconstruction and colour cast on the example scenes' images,
which training never sees; the colour-swap probe; small-hole inpainting against OpenCV Telea)
and writes the pipeline with `save_pretrained` (atomically) and the record `toy_model.json`.
A checkpoint is written every few hundred steps; an interrupted run resumes from it.

    python train_toy_model.py                              # writes models/toy-sd2-inpainting
    python train_toy_model.py --vae_steps 50 --decoder_steps 20 --unet_steps 50 \
        --output_dir /tmp/toy                              # a smoke run
    python train_toy_model.py --init_from models/toy-sd2-inpainting --decoder_steps 600 \
        --unet_steps 0 --output_dir runs/toy-decoder   # continues a trained folder: here the
        # decoder stage only (the VAE stage is not repeated)
"""

from __future__ import annotations

import argparse
import colorsys
import functools
import json
import math
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageFilter

import realfill_utils as ru
from make_tiny_model import (
    SD2_SCHEDULER,
    save_sd2_pipeline,
    small_text_encoder,
    write_sd2_tokenizer,
)

if TYPE_CHECKING:  # torch is imported where it is used, so that --help answers at once
    import torch

RESOLUTION = 64  # px: the demo's resolution; the UNet trains at it, the VAE is checked at it
VAE_CROP = 32  # px: the VAE is fully convolutional, so it trains on small crops, 4x cheaper
VAE_STEPS = 4000
# Off by default: on the committed model it lowered the green cast but cost the quality gate
# PSNR (perf/results/toy_decoder_stage.json, quality_gate_decoder_stage.md; docs/toy_model.md)
DECODER_STEPS = 0
UNET_STEPS = 6000
BATCH_SIZE = 16
VAE_LR = 1e-3
DECODER_LR = 2e-4  # a refinement of a trained decoder
COLOUR_POOL = 8  # px: the decoder stage's colour loss compares means over these squares
COLOUR_WEIGHT = 1.0  # of that loss, beside the per-pixel loss
UNET_LR = 1e-3
KL_WEIGHT = 1e-6  # as Stable Diffusion's VAE: latents stay close to deterministic codes
PROCEDURAL_FRACTION = 0.5  # of each batch; the rest are crops of the reserved photos
TRAIN_PROMPTS = ("", "a photo")  # no captions exist; the UNet sees an empty and a generic prompt
CHECKPOINT_EVERY = 500  # steps; a killed run loses at most this much
RECORD_FILE = "toy_model.json"
# fields of a parent's record that a continuing run (--init_from) keeps
TRAINING_FIELDS = (
    *("seed", "resolution", "batch_size", "vae_steps", "decoder_steps", "unet_steps"),
    *("vae_seconds", "vae_final_loss", "unet_final_loss", "decoder_final_loss"),
)
ROOT = Path(__file__).resolve().parent
CHECKPOINT_DIR = ROOT / "runs" / "toy-model-checkpoint"
STEP_KEYS = {"vae_steps": "VAE", "decoder_steps": "decoder", "unet_steps": "UNet"}  # per run
DOCS = ROOT / "docs" / "toy_model.md"  # its measured part is written from the committed record
DOCS_BEGIN = "<!-- toy model record: written by train_toy_model.py from toy_model.json -->"
DOCS_END = "<!-- end of toy model record -->"

# SD2's betas, rescaled to zero terminal SNR, with v-prediction and trailing timesteps: at
# t = 999 the latent is pure noise, so the model cannot read the image's colour from it.
NOISE_SCHEDULE = dict(
    SD2_SCHEDULER,
    prediction_type="v_prediction",
    rescale_betas_zero_snr=True,
    timestep_spacing="trailing",
)

# The architecture. Sizes keep the whole folder under 25 MB (the text encoder's 49,408-token
# embedding alone is 6.3 MB at width 32). The shapes are SD2's but for one thing: the VAE
# downsamples by 4, not 8. A VAE that trains in minutes on a CPU cannot hold a 64 px image in
# 1/8-size latents (even a bicubic thumbnail at 1/8 loses 3 dB more than at 1/4; see
# docs/toy_model.md). Every script reads the factor from the VAE config.
VAE_CONFIG = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 3,  # three blocks: latents are 1/4 of the image
    up_block_types=("UpDecoderBlock2D",) * 3,
    block_out_channels=(32, 64, 64),
    layers_per_block=1,
    latent_channels=4,
    norm_num_groups=16,
    mid_block_add_attention=False,  # fully convolutional: trains on crops, runs on any size
    sample_size=RESOLUTION,
)
UNET_CONFIG = dict(
    sample_size=RESOLUTION // 4,
    in_channels=9,  # noisy latents (4) + mask (1) + masked-image latents (4)
    out_channels=4,
    block_out_channels=(32, 64, 64),
    layers_per_block=1,
    # attention at every level (SD2 has it at three of four): RealFill's LoRA lives in the
    # attention layers, so it then reaches the full latent resolution too
    down_block_types=("CrossAttnDownBlock2D",) * 3,
    up_block_types=("CrossAttnUpBlock2D",) * 3,
    cross_attention_dim=32,
    attention_head_dim=(2, 4, 8),
    use_linear_projection=True,  # as SD2
    norm_num_groups=16,
)


def no_grad(fn):
    """torch.no_grad() around `fn`, importing torch only when `fn` is called."""

    @functools.wraps(fn)
    def without_grad(*args, **kwargs):
        import torch

        with torch.no_grad():
            return fn(*args, **kwargs)

    return without_grad


# ---------------------------------------------------------------------------------------------
# Data: crops of the reserved photos, and procedural dead-leaves images
# ---------------------------------------------------------------------------------------------
def _randint(high: int, generator: torch.Generator) -> int:
    import torch

    return int(torch.randint(high, (), generator=generator))


class PhotoCrops:
    """Random (3, size, size) crops in [-1, 1] of the reserved photos, at random scales, flips
    and mild tints, drawn in memory from a small image pyramid. Channels are never swapped:
    colour must stay predictable from the visible part of an image."""

    def __init__(self, size: int, max_levels: int = 4):
        import skimage.data
        import torch

        from make_example_scenes import RESERVED

        self.size = size
        self.levels: list[list[torch.Tensor]] = []
        self.grey: list[bool] = []
        for _, file, *_ in RESERVED:
            with Image.open(Path(skimage.data.data_dir) / file) as image:
                self.grey.append(image.mode in ("L", "I;16", "1"))
                rgb = image.convert("RGB")
            pyramid = []
            for level in range(max_levels):  # short side size, 1.6x, 1.6^2x ... up to full
                short = round(size * 1.6**level)
                if short > min(rgb.size) and level:
                    break
                scale = short / min(rgb.size)
                w, h = max(size, round(rgb.width * scale)), max(size, round(rgb.height * scale))
                pixels = np.asarray(rgb.resize((w, h), Image.Resampling.LANCZOS))
                pyramid.append(torch.from_numpy(pixels.copy()).permute(2, 0, 1))
            self.levels.append(pyramid)

    def colours(self, count: int, generator: torch.Generator) -> np.ndarray:
        """`count` RGB colours in [0, 1] taken from random pixels of the colour photos."""
        colour = [i for i, grey in enumerate(self.grey) if not grey]
        picks = []
        for _ in range(count):
            image = self.levels[colour[_randint(len(colour), generator)]][0]
            y, x = _randint(image.shape[1], generator), _randint(image.shape[2], generator)
            picks.append(image[:, y, x].float().numpy() / 255)
        return np.stack(picks)

    def sample(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        import torch

        crops = []
        for _ in range(batch_size):
            i = _randint(len(self.levels), generator)
            image = self.levels[i][_randint(len(self.levels[i]), generator)]
            y = _randint(image.shape[1] - self.size + 1, generator)
            x = _randint(image.shape[2] - self.size + 1, generator)
            crop = image[:, y : y + self.size, x : x + self.size].float() / 255
            if _randint(2, generator):
                crop = crop.flip(-1)
            # grey photos get a mild tint, colour photos a milder one (white balance)
            spread = 0.3 if self.grey[i] else 0.15
            tint = 1 - spread / 2 + spread * torch.rand(3, 1, 1, generator=generator)
            crops.append((crop * tint).clamp(0, 1) * 2 - 1)
        return torch.stack(crops)


class DeadLeaves:
    """Procedural images in [-1, 1]: shapes of power-law sizes (disks, ellipses, rectangles)
    occluding one another over a gradient background, each flat, shaded or textured, in colours
    drawn from a per-image palette (half from the photos' pixels, half natural-looking HSV).

    Dead-leaves images share natural images' scale invariance and edge statistics, and serve as
    pre-training data in their place (Baradad et al., NeurIPS 2021)."""

    def __init__(self, size: int, photos: PhotoCrops):
        self.size = size
        self.photos = photos
        ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
        self.ys, self.xs = ys, xs

    def palette(self, rng: np.random.Generator, generator: torch.Generator) -> np.ndarray:
        count = int(rng.integers(3, 9))
        from_photos = self.photos.colours(count, generator)
        hue = rng.random(count)
        saturation = rng.beta(1.2, 2.5, count)  # natural scenes: mostly muted colours
        value = rng.beta(2.0, 1.6, count)
        rgb = np.array(
            [colorsys.hsv_to_rgb(*hsv) for hsv in zip(hue, saturation, value, strict=True)]
        )
        use_photo = rng.random(count) < 0.5
        return np.where(use_photo[:, None], from_photos, rgb)

    def one(self, rng: np.random.Generator, generator: torch.Generator) -> np.ndarray:
        size, ys, xs = self.size, self.ys, self.xs
        palette = self.palette(rng, generator)

        def colour() -> np.ndarray:
            base = palette[rng.integers(len(palette))]
            return np.clip(base + rng.normal(0, 0.04, 3), 0, 1).astype(np.float32)

        def fill(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
            kind = rng.random()
            c0 = colour()
            if kind < 0.55:  # flat
                return np.broadcast_to(c0, (*xs.shape, 3))
            if kind < 0.8:  # linear shading towards a second colour
                angle = rng.uniform(0, 2 * np.pi)
                t = (np.cos(angle) * xs + np.sin(angle) * ys) / size
                t = (t - t.min()) / max(float(np.ptp(t)), 1e-6)
                return c0 + (colour() - c0) * t[..., None]
            # texture: stripes or blotches of a second colour
            period = rng.uniform(2, size / 3)
            angle = rng.uniform(0, np.pi)
            phase = (np.cos(angle) * xs + np.sin(angle) * ys) * (2 * np.pi / period)
            t = 0.5 + 0.5 * np.sin(phase + rng.uniform(0, 2 * np.pi))
            if rng.random() < 0.5:
                t = t * (0.6 + 0.4 * rng.random(xs.shape))
            return c0 + (colour() - c0) * t[..., None]

        canvas = np.array(fill(xs, ys), dtype=np.float32)
        r_min, r_max = 1.5, size * 0.8
        count = int(rng.integers(20, 100))
        # radius density ~ r^-2 (inverse-CDF draw): many small shapes, some large, at any scale
        u = rng.random(count)
        radii = 1 / (1 / r_min - u * (1 / r_min - 1 / r_max))
        # mostly large shapes first, as far things behind near ones; sometimes any order
        order = rng.permutation(count) if rng.random() < 0.3 else np.argsort(-radii)
        for r in radii[order]:
            cy, cx = rng.uniform(-0.1, 1.1, 2) * size
            a, b = r, r * rng.uniform(0.3, 1.0)
            theta = rng.uniform(0, np.pi)
            kind = rng.random()
            # only the shape's bounding box is computed
            y0, y1 = max(0, int(cy - a - 1)), min(size, int(cy + a + 2))
            x0, x1 = max(0, int(cx - a - 1)), min(size, int(cx + a + 2))
            if y0 >= y1 or x0 >= x1:
                continue
            box_x, box_y = xs[y0:y1, x0:x1], ys[y0:y1, x0:x1]
            dx, dy = box_x - cx, box_y - cy
            u_ = np.cos(theta) * dx + np.sin(theta) * dy
            v_ = -np.sin(theta) * dx + np.cos(theta) * dy
            if kind < 0.6:  # ellipse (a disk when a == b), antialiased edge
                rho = np.sqrt((u_ / a) ** 2 + (v_ / b) ** 2)
                alpha = np.clip((1 - rho) * b + 0.5, 0, 1)
            else:  # rectangle
                alpha = np.clip(np.minimum(a - np.abs(u_), b - np.abs(v_)) + 0.5, 0, 1)
            if alpha.max() <= 0:
                continue
            region = canvas[y0:y1, x0:x1]
            region += (fill(box_x, box_y) - region) * alpha[..., None]
        if rng.random() < 0.3:  # defocus
            blurred = Image.fromarray((canvas * 255).astype(np.uint8))
            radius = rng.uniform(0.3, 1.2)
            canvas = np.asarray(blurred.filter(ImageFilter.GaussianBlur(radius)), np.float32)
            canvas = canvas / 255
        canvas = canvas + rng.normal(0, rng.uniform(0, 0.015), canvas.shape)  # sensor noise
        return np.clip(canvas, 0, 1).astype(np.float32)

    def sample(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        import torch

        seed = int(torch.randint(2**62, (), generator=generator))
        rng = np.random.default_rng(seed)
        images = [self.one(rng, generator) for _ in range(batch_size)]
        return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2) * 2 - 1


class TrainingImages:
    """Batches mixing dead-leaves images and photo crops (PROCEDURAL_FRACTION procedural)."""

    def __init__(self, size: int):
        self.size = size
        self.photos = PhotoCrops(size)
        self.procedural = DeadLeaves(size, self.photos)

    def sample(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        import torch

        procedural = int(round(batch_size * PROCEDURAL_FRACTION))
        parts = [self.procedural.sample(procedural, generator)] if procedural else []
        if batch_size - procedural:
            parts.append(self.photos.sample(batch_size - procedural, generator))
        return torch.cat(parts)


def heldout_images(size: int) -> list[tuple[str, torch.Tensor]]:
    """The example scenes' ground truths and references, resized to `size` on the short side
    and centre-cropped to a multiple of 8: images the toy model never trains on."""
    import torch

    images = []
    for path in sorted((ROOT / "data" / "Custom").glob("*/*/*")):
        if path.name in ("mask.png", "target.png") or path.suffix not in ru.IMAGE_EXTENSIONS:
            continue
        image = ru.load_image(path)
        scale = size / min(image.size)
        image = image.resize(
            (round(image.width * scale), round(image.height * scale)), Image.Resampling.LANCZOS
        )
        w, h = image.width // 8 * 8, image.height // 8 * 8
        x, y = (image.width - w) // 2, (image.height - h) // 2
        image = image.crop((x, y, x + w, y + h))
        pixels = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).float()
        images.append((str(path.relative_to(ROOT)), pixels / 127.5 - 1))
    return images


def psnr(a: torch.Tensor, b: torch.Tensor, weight: torch.Tensor | None = None) -> float:
    """PSNR (dB, 8-bit) of two images in [-1, 1], over the pixels where weight is 1."""
    a, b = ((a.clamp(-1, 1) + 1) * 127.5).round(), ((b.clamp(-1, 1) + 1) * 127.5).round()
    squared = (a - b) ** 2
    if weight is not None:
        weight = weight.expand_as(squared)
        mse = float((squared * weight).sum() / weight.sum())
    else:
        mse = float(squared.mean())
    return 10 * math.log10(255**2 / max(mse, 1e-10))


@no_grad
def reconstruction_scores(vae, images: list[tuple[str, torch.Tensor]]) -> tuple[dict, list]:
    """PSNR (dB) of VAE encode (posterior mean) + decode per image, and the mean colour error
    (decoded minus original, 8-bit levels, per RGB channel) averaged over the images."""
    vae.eval()
    scores, shifts = {}, []
    for name, image in images:
        latent = vae.encode(image[None]).latent_dist.mode()
        decoded = vae.decode(latent).sample[0].clamp(-1, 1)
        scores[name] = psnr(decoded, image)
        shifts.append(((decoded - image).mean((1, 2)) * 127.5).tolist())
    return scores, np.mean(shifts, axis=0).round(2).tolist()


def thumbnail_psnr(images: list[tuple[str, torch.Tensor]], factor: int) -> float:
    """Mean PSNR of a bicubic thumbnail at 1/factor scaled back up: what 3 channels at the
    latents' size keep, a yardstick for a VAE with 4."""
    import torch.nn.functional as F

    scores = []
    for _, image in images:
        small = F.interpolate(image[None], scale_factor=1 / factor, mode="bicubic", antialias=True)
        back = F.interpolate(small, size=image.shape[-2:], mode="bicubic")[0]
        scores.append(psnr(back, image))
    return float(np.mean(scores))


# ---------------------------------------------------------------------------------------------
# The two training stages, resumable
# ---------------------------------------------------------------------------------------------
def cosine_lr(optimizer, steps: int, warmup: int):
    from diffusers.optimization import get_cosine_schedule_with_warmup

    return get_cosine_schedule_with_warmup(optimizer, warmup, steps)


class Checkpoint:
    """One file holding the whole run's state, replaced atomically every CHECKPOINT_EVERY steps.

    A run resumes from it only if it was made with the same seed, step counts and --init_from
    folder."""

    def __init__(self, folder: Path, args: argparse.Namespace):
        self.path = folder / "checkpoint.pt"
        self.key = {
            "seed": args.seed,
            "vae_steps": args.vae_steps,
            "decoder_steps": args.decoder_steps,
            "unet_steps": args.unet_steps,
            "init_from": str(args.init_from.resolve()) if args.init_from else None,
        }

    def load(self) -> dict | None:
        import torch

        if not self.path.is_file():
            return None
        state = torch.load(self.path, weights_only=True)
        if state["key"] != self.key:
            raise ru.SceneError(
                f"{self.path} belongs to a run with other settings ({state['key']}); "
                "delete it or pass the same --seed/--vae_steps/--decoder_steps/--unet_steps/"
                "--init_from"
            )
        return state

    def save(self, state: dict) -> None:
        import torch

        with ru.atomic_path(self.path) as tmp:
            torch.save({**state, "key": self.key}, tmp)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
        if self.path.parent.is_dir() and not any(self.path.parent.iterdir()):
            self.path.parent.rmdir()


def run_stage(name, model, loss_fn, steps, lr, warmup, state, checkpoint, generator, log):
    """Train `model` for `steps` AdamW steps of `loss_fn(step)`, continuing from `state` (the
    run's checkpoint dict, updated in place) if it holds this stage; returns the loss curve."""
    import torch
    from tqdm.auto import tqdm

    trained = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trained, lr=lr, weight_decay=1e-2)
    schedule = cosine_lr(optimizer, steps, warmup=min(warmup, steps // 10))
    curve = state.get(f"{name}_curve", [])
    if state.get("stage") == name and "generator" in state:
        # the random state where the run stopped: in this stage, or at its start
        generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
    if state.get("stage") == name and state.get("step", 0):
        model.load_state_dict(state[f"{name}_model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        log(f"{name}: resumed at step {state['step']}")
    first = state["step"] + 1 if state.get("stage") == name else 1
    model.train()
    for step in tqdm(range(first, steps + 1), desc=name, unit="step", mininterval=5):
        loss = loss_fn()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trained, 1.0)  # not a frozen part's stale gradient
        optimizer.step()
        schedule.step()
        curve.append(loss.item())
        if step % 250 == 0 or step == steps:
            log(f"{name} step {step}/{steps}: loss {np.mean(curve[-250:]):.4f}")
        if step % CHECKPOINT_EVERY == 0 and step < steps:
            state.update(
                {
                    "stage": name,
                    "step": step,
                    f"{name}_model": model.state_dict(),
                    f"{name}_curve": curve,
                    "optimizer": optimizer.state_dict(),
                    "schedule": schedule.state_dict(),
                    "generator": generator.get_state(),
                    "torch_rng": torch.get_rng_state(),
                    "seconds": state["seconds_before"] + time.perf_counter() - state["start"],
                }
            )
            checkpoint.save({k: v for k, v in state.items() if k != "start"})
    model.zero_grad(set_to_none=True)  # none left for a later stage of the same model
    model.eval()
    state[f"{name}_curve"] = curve
    return curve


def vae_loss_fn(vae, data: TrainingImages, generator: torch.Generator):
    import torch.nn.functional as F

    def loss():
        images = data.sample(BATCH_SIZE, generator)
        posterior = vae.encode(images).latent_dist
        decoded = vae.decode(posterior.sample(generator=generator)).sample
        return (
            F.l1_loss(decoded, images)
            + F.mse_loss(decoded, images)
            + KL_WEIGHT * posterior.kl().mean()
        )

    return loss


def recolour(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each image (in [-1, 1]) with p = 0.5 has its hue turned by a random angle about the grey
    axis and its saturation scaled by 0.6-1.8: colours for the decoder stage that the training
    images rarely hold (saturated oranges, browns), with the same shapes and the same
    brightness (except where the result is clipped to [-1, 1])."""
    import torch

    n = images.shape[0]
    angle = (torch.rand(n, generator=generator) * 2 - 1) * math.pi
    saturation = 0.6 + 1.2 * torch.rand(n, generator=generator)
    keep = torch.rand(n, generator=generator) < 0.5
    angle[keep], saturation[keep] = 0.0, 1.0
    grey = images.mean(1, keepdim=True)
    chroma = images - grey  # orthogonal to the grey axis k = (1, 1, 1) / sqrt(3)
    k = torch.full((3,), 3**-0.5)
    cross = torch.linalg.cross(k.view(1, 3, 1, 1).expand_as(chroma), chroma, dim=1)
    c, s = angle.cos().view(n, 1, 1, 1), angle.sin().view(n, 1, 1, 1)
    turned = c * chroma + s * cross  # Rodrigues' rotation of a vector orthogonal to the axis
    return (grey + saturation.view(n, 1, 1, 1) * turned).clamp(-1, 1)


def decoder_loss_fn(vae, data: TrainingImages, generator: torch.Generator):
    """The decoder stage: per-pixel reconstruction of recoloured images from the frozen
    encoder's latents, plus COLOUR_WEIGHT times the error of their COLOUR_POOL-px mean colours."""
    import torch
    import torch.nn.functional as F

    def loss():
        images = recolour(data.sample(BATCH_SIZE, generator), generator)
        with torch.no_grad():
            latents = vae.encode(images).latent_dist.sample(generator=generator)
        decoded = vae.decode(latents).sample
        means = F.l1_loss(F.avg_pool2d(decoded, COLOUR_POOL), F.avg_pool2d(images, COLOUR_POOL))
        return F.l1_loss(decoded, images) + F.mse_loss(decoded, images) + COLOUR_WEIGHT * means

    return loss


@no_grad
def normalise_latents(vae, data: TrainingImages, generator: torch.Generator) -> dict:
    """Centre and scale the latents per channel (zero mean, unit std over 512 training crops),
    folded into quant_conv (encoder side) and post_quant_conv (decoder side); scaling_factor
    becomes 1. Returns the statistics before folding."""
    import torch

    latents = torch.cat(
        [vae.encode(data.sample(32, generator)).latent_dist.sample() for _ in range(16)]
    )
    mean = latents.mean((0, 2, 3))
    std = latents.std((0, 2, 3))
    c = vae.config.latent_channels
    scale = 1 / std
    quant, post = vae.quant_conv, vae.post_quant_conv
    # encoder: z' = (z - mean) * scale; the posterior's log-variance shifts by 2 log(scale)
    quant.weight[:c] *= scale[:, None, None, None]
    quant.bias[:c] = (quant.bias[:c] - mean) * scale
    quant.bias[c:] += 2 * torch.log(scale)
    # decoder: z = z' / scale + mean
    post.bias += (post.weight[:, :, 0, 0] * mean[None]).sum(1)
    post.weight /= scale[None, :, None, None]
    vae.register_to_config(scaling_factor=1.0)
    return {"mean": mean.tolist(), "std": std.tolist()}


def unet_loss_fn(components, data: TrainingImages, generator: torch.Generator):
    """The inpainting objective through RealFill's own loss and masks (nothing is "known-only"
    here, so every latent counts)."""
    import torch

    import train_realfill as tr

    models = tr.training_models(components, torch.device("cpu"), torch.float32)
    prompt_ids = tr.tokenize(components.tokenizer, TRAIN_PROMPTS[1])  # (1, 77)
    empty_ids = tr.tokenize(components.tokenizer, TRAIN_PROMPTS[0])
    size = data.size
    no_hole = torch.zeros(BATCH_SIZE, 1, size, size)

    def loss():
        images = data.sample(BATCH_SIZE, generator)
        fill = torch.stack([tr.random_fill_mask(size, generator) for _ in range(BATCH_SIZE)])
        batch = {"images": images, "fill_mask": fill[:, None], "hole": no_hole}
        # training_loss draws its noise and prompt dropout from torch's global RNG (seeded)
        return tr.training_loss(batch, models, prompt_ids, empty_ids)

    return loss


# ---------------------------------------------------------------------------------------------
# Measurements of the finished model
# ---------------------------------------------------------------------------------------------
def central_hole(size: int, hole: int) -> torch.Tensor:
    """(1, 1, size, size) float mask, 1 inside a centred hole x hole square."""
    import torch

    mask = torch.zeros(1, 1, size, size)
    start = (size - hole) // 2
    mask[..., start : start + hole, start : start + hole] = 1
    return mask


def heldout_squares(size: int) -> list[torch.Tensor]:
    """Centre crops (3, size, size) of the held-out images at short side `size`."""
    squares = []
    for _, image in heldout_images(size):
        h, w = image.shape[1:]
        y, x = (h - size) // 2, (w - size) // 2
        squares.append(image[:, y : y + size, x : x + size])
    return squares


@no_grad
def colour_swap_probe(components, timesteps=(999, 750, 500, 250)) -> dict:
    """Does the UNet take colour from the known region or from the noisy latent?

    For each held-out image, the noisy latent is made from its colour-swapped copy (RGB -> BRG)
    while the masked-image conditioning comes from the true image (a centred hole of half the
    side); the predicted clean image is scored inside the hole against both. A model that
    follows the conditioning scores higher against the truth."""
    import torch
    import torch.nn.functional as F

    import train_realfill as tr

    vae, unet = components.vae, components.unet
    scheduler = tr.training_models(components, "cpu", torch.float32)["noise_scheduler"]
    size = RESOLUTION
    fill = central_hole(size, size // 2)
    prompt = components.text_encoder(tr.tokenize(components.tokenizer, ru.PROMPT))[0]
    result = {}
    for t in timesteps:
        to_truth, to_swapped = [], []
        generator = torch.Generator().manual_seed(t)
        for image in heldout_squares(size):
            swapped = image[[2, 0, 1]]
            latents = vae.encode(swapped[None]).latent_dist.mode() * vae.config.scaling_factor
            masked = vae.encode((image * (1 - fill[0]))[None]).latent_dist.mode()
            masked = masked * vae.config.scaling_factor
            noise = torch.randn(latents.shape, generator=generator)
            timestep = torch.tensor([t])
            noisy = scheduler.add_noise(latents, noise, timestep)
            mask_latent = F.interpolate(fill, size=latents.shape[-2:])
            out = unet(torch.cat([noisy, mask_latent, masked], 1), timestep, prompt).sample
            alpha = scheduler.alphas_cumprod[t]
            if scheduler.config.prediction_type == "v_prediction":
                x0 = alpha.sqrt() * noisy - (1 - alpha).sqrt() * out
            else:
                x0 = (noisy - (1 - alpha).sqrt() * out) / alpha.sqrt().clamp_min(1e-4)
            decoded = vae.decode(x0 / vae.config.scaling_factor).sample[0]
            to_truth.append(psnr(decoded, image, fill[0]))
            to_swapped.append(psnr(decoded, swapped, fill[0]))
        result[str(t)] = {
            "psnr_to_truth_db": round(float(np.mean(to_truth)), 2),
            "psnr_to_swapped_db": round(float(np.mean(to_swapped)), 2),
        }
    return result


@no_grad
def small_hole_inpainting(components, seeds=(0, 1, 2, 3)) -> dict:
    """Masked PSNR inside a centred 16 px hole (at 64 px) of each held-out image: the un-tuned
    model (DPM-Solver++ 25 steps, mean over seeds) against OpenCV Telea and a mean-colour fill."""
    import cv2
    import torch

    size, hole = RESOLUTION, RESOLUTION // 4
    fill = central_hole(size, hole)[0, 0].numpy().astype(bool)
    pipe = ru.make_pipeline(components, "dpmsolver++")
    model, telea, mean_fill = [], [], []
    for image in heldout_squares(size):
        truth = torch.as_tensor(image)
        pixels = ((image.permute(1, 2, 0).numpy() + 1) * 127.5).round().astype(np.uint8)
        target = Image.fromarray(pixels)
        weight = torch.from_numpy(fill.astype(np.float32))[None]
        raw = ru.generate(
            pipe, target, fill, list(seeds), resolution=size, num_inference_steps=25,
            multiple=components.size_multiple,
        )  # fmt: skip
        scores = []
        for generated in raw:
            done = np.where(fill[..., None], np.asarray(generated), pixels)
            scores.append(psnr(to_tensor(done), truth, weight))
        model.append(float(np.mean(scores)))
        inpainted = cv2.inpaint(pixels, fill.astype(np.uint8) * 255, 5, cv2.INPAINT_TELEA)
        telea.append(psnr(to_tensor(inpainted), truth, weight))
        flat = np.where(fill[..., None], pixels[~fill].mean(0).round(), pixels)
        mean_fill.append(psnr(to_tensor(flat), truth, weight))
    return {
        "hole": f"centred {hole}x{hole} px at {size}x{size} px, held-out images",
        "toy_model_psnr_db": round(float(np.mean(model)), 2),
        "telea_psnr_db": round(float(np.mean(telea)), 2),
        "mean_colour_psnr_db": round(float(np.mean(mean_fill)), 2),
    }


def measurements(components) -> dict:
    """Every figure the record holds about the finished model, on the held-out images (the
    example scenes' ground truths and references present now)."""
    vae = components.vae
    heldout, heldout_2x = heldout_images(RESOLUTION), heldout_images(2 * RESOLUTION)
    psnr_1x, colour_error = reconstruction_scores(vae, heldout)
    psnr_2x, _ = reconstruction_scores(vae, heldout_2x)
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    return {
        "vae_psnr_db": {k: round(v, 2) for k, v in psnr_1x.items()},
        "vae_psnr_db_mean": round(float(np.mean(list(psnr_1x.values()))), 2),
        "vae_psnr_db_mean_at_2x_resolution": round(float(np.mean(list(psnr_2x.values()))), 2),
        "vae_colour_error_levels_rgb": colour_error,
        "bicubic_thumbnail_psnr_db_mean": round(thumbnail_psnr(heldout, factor), 2),
        "bicubic_thumbnail_psnr_db_mean_at_2x_resolution": round(
            thumbnail_psnr(heldout_2x, factor), 2
        ),
        "vae_downsampling_factor": factor,
        "psnr_on": "example scenes' gt and references (never trained on), short side "
        f"{RESOLUTION} px, VAE posterior mean",
        "colour_swap_probe": colour_swap_probe(components),
        "small_hole_inpainting": small_hole_inpainting(components),
    }


def measure_only(output_dir: Path, command: str) -> dict:
    """Measure a trained folder again and update its record (the training fields stay)."""
    components = ru.load_components(output_dir)
    record = json.loads((output_dir / RECORD_FILE).read_text())
    record.update(measurements(components))
    record["measured_with"] = command
    with ru.atomic_path(output_dir / RECORD_FILE) as tmp:
        tmp.write_text(json.dumps(record, indent=2) + "\n")
    return record


def docs_section(record: dict) -> str:
    """The "Measured" part of docs/toy_model.md, from the record (no figure typed by hand)."""
    first = {"command": record["command"], "seconds": record["total_seconds"]}
    runs = record.get("runs") or [first]
    seconds = record.get("total_seconds_all_runs", record["total_seconds"])

    def one_run(run: dict) -> str:
        steps = [f"{run[k]:,} {label} steps" for k, label in STEP_KEYS.items() if k in run]
        seconds = f"{run['seconds']:.0f} s"
        return f"`{run['command']}` ({', '.join([*steps, seconds])})"

    made = "; then ".join(one_run(r) for r in runs)
    measured = record.get("measured_with")
    cast = " / ".join(f"{v:+.2f}" for v in record["vae_colour_error_levels_rgb"])
    worst = max(abs(v) for v in record["vae_colour_error_levels_rgb"])
    vae_db = record["vae_psnr_db_mean"]
    hole = record["small_hole_inpainting"]
    probe = [
        f"  | {t} | {v['psnr_to_truth_db']:.2f} | {v['psnr_to_swapped_db']:.2f} |"
        for t, v in record["colour_swap_probe"].items()
    ]
    met = "met" if hole["toy_model_psnr_db"] >= hole["telea_psnr_db"] else "**not met**"
    return "\n".join([
        f"- **Made by:** {made}"
        + (f"; {seconds:.0f} s in all, the last run" if len(runs) > 1 else "")
        + f" on an {record['machine'].split(',')[0]} machine with "
        f"{record['torch_threads']} threads ({record['vae_steps']:,} VAE steps, "
        f"{record.get('decoder_steps', 0):,} decoder steps, {record['unet_steps']:,} UNet steps, "
        f"batch {record['batch_size']})."
        + (f" Re-measured by `{measured}`." if measured else ""),
        f"- **VAE reconstruction:** **{vae_db:.2f} dB** mean PSNR on the held-out images "
        f"(goal: 23 dB; {'met' if vae_db >= 23 else '**not met**'}), "
        f"{record['vae_psnr_db_mean_at_2x_resolution']:.2f} dB at {2 * record['resolution']} px. "
        "For scale, a bicubic thumbnail at the latents' size scaled back up keeps "
        f"{record['bicubic_thumbnail_psnr_db_mean']:.2f} dB.",
        "- **Colour cast of the VAE:** mean error per channel (decoded minus original, 8-bit "
        f"levels, R/G/B) {cast} (goal: at most 3 levels; "
        f"{'met' if worst <= 3 else '**not met**'}); the first toy model's green error was "
        "16-19 levels.",
        "- **Colour-swap probe** (`colour_swap_probe`): the noisy latent is made from a "
        "colour-swapped copy of a held-out image (RGB -> BRG) while the known region comes from "
        "the true image (a centred hole of half the side); the model's prediction of the clean "
        "image, scored inside the hole (dB):",
        "",
        "  | t | to the truth | to the swapped copy |",
        "  |---|---|---|",
        *probe,
        "",
        "  At high noise the prediction should follow the known region, not the noise; at low "
        "noise the noisy latent itself holds most of the image, and following it is right.",
        f"- **Small-hole inpainting** (`small_hole_inpainting`, {hole['hole']}, DPM-Solver++ 25 "
        f"steps, mean over 4 seeds): the un-tuned toy {hole['toy_model_psnr_db']:.2f} dB, "
        f"OpenCV Telea {hole['telea_psnr_db']:.2f} dB, a mean-colour fill "
        f"{hole['mean_colour_psnr_db']:.2f} dB (goal: match Telea; {met}).",
    ])  # fmt: skip


def write_docs(record: dict, docs: Path = DOCS) -> bool:
    """Rewrite the measured part of docs/toy_model.md from the committed folder's record."""
    return ru.replace_between_markers(docs, DOCS_BEGIN, DOCS_END, docs_section(record))


def to_tensor(pixels: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, H, W) float in [-1, 1]."""
    import torch

    return torch.from_numpy(np.asarray(pixels, np.float32)).permute(2, 0, 1) / 127.5 - 1


# ---------------------------------------------------------------------------------------------
# Building and saving
# ---------------------------------------------------------------------------------------------
def build_untrained(seed: int):
    """Random VAE, UNet and text encoder of the toy architecture, and the SD2 tokenizer."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTokenizer

    with tempfile.TemporaryDirectory() as tokenizer_dir:  # read once; saved again at the end
        write_sd2_tokenizer(Path(tokenizer_dir))
        tokenizer = CLIPTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(seed)
    vae = AutoencoderKL(**VAE_CONFIG)
    unet = UNet2DConditionModel(**UNET_CONFIG)
    text_encoder = small_text_encoder(tokenizer)  # never trained: there are no captions
    text_encoder.requires_grad_(False)
    return tokenizer, text_encoder, vae, unet


def save_pipeline(
    output_dir: Path, tokenizer, text_encoder, vae, unet, record: dict, keep: tuple = ()
) -> None:
    """save_pretrained into a temporary folder, then rename it onto output_dir; the files in
    `keep` are copied in beside (a parent folder's recipe, where the UNet was not trained)."""
    import shutil

    from diffusers import DDPMScheduler

    with ru.atomic_path(output_dir, is_dir=True) as tmp:
        save_sd2_pipeline(tmp, tokenizer, text_encoder, vae, unet)
        DDPMScheduler(**NOISE_SCHEDULE).save_pretrained(tmp / "scheduler")
        for config in tmp.glob("*/config.json"):  # a continued run loaded it from a local path
            settings = json.loads(config.read_text())
            if settings.pop("_name_or_path", None) is not None:
                config.write_text(json.dumps(settings, indent=2, sort_keys=True) + "\n")
        (tmp / RECORD_FILE).write_text(json.dumps(record, indent=2) + "\n")
        for file in keep:
            shutil.copy2(file, tmp / Path(file).name)


def train_toy_model(args: argparse.Namespace) -> dict:
    """Both stages, the measurements, then save; returns the training record."""
    import torch
    from tqdm.auto import tqdm

    torch.manual_seed(args.seed)
    generator = torch.Generator().manual_seed(args.seed)
    checkpoint = Checkpoint(args.checkpoint_dir, args)
    state = checkpoint.load() or {"seconds": 0.0}
    state["start"], state["seconds_before"] = time.perf_counter(), state["seconds"]

    def elapsed() -> float:
        return state["seconds_before"] + time.perf_counter() - state["start"]

    def log(message: str) -> None:
        tqdm.write(f"[{elapsed():6.0f} s] {message}")

    data, vae_data = TrainingImages(RESOLUTION), TrainingImages(VAE_CROP)
    parent = None
    if args.init_from:  # continue a trained folder: its VAE stage is not repeated
        loaded = ru.load_components(args.init_from)
        tokenizer, text_encoder, vae, unet = (
            loaded.tokenizer, loaded.text_encoder, loaded.vae, loaded.unet
        )  # fmt: skip
        text_encoder.requires_grad_(False)
        parent = json.loads((args.init_from / RECORD_FILE).read_text())
        state.setdefault("latent_statistics", parent.get("latent_statistics_before_folding"))
        state.setdefault("vae_seconds", 0.0)
        state.setdefault("vae_curve", [])
    else:
        tokenizer, text_encoder, vae, unet = build_untrained(args.seed)

    # Stage 1: the VAE (skipped on resume once it is done; its weights are in the checkpoint)
    if state.get("vae_done"):
        vae.load_state_dict(state["vae_final"])
        vae.register_to_config(scaling_factor=1.0)
        log("VAE: loaded from the checkpoint")
    elif args.init_from:
        log(f"VAE: from {args.init_from}")
    else:
        vae.requires_grad_(True)
        run_stage(
            "vae", vae, vae_loss_fn(vae, vae_data, generator), args.vae_steps, VAE_LR, 100,
            state, checkpoint, generator, log,
        )  # fmt: skip
        state["latent_statistics"] = normalise_latents(vae, data, generator)
        state.update(
            vae_done=True, vae_final=vae.state_dict(), vae_seconds=elapsed(), stage="decoder",
            step=0, generator=generator.get_state(), torch_rng=torch.get_rng_state(),
        )  # fmt: skip
        state.pop("vae_model", None)
        checkpoint.save({k: v for k, v in state.items() if k != "start"})

    # Stage 1b: the decoder alone, on recoloured images (the latents do not change)
    if state.get("decoder_done"):
        log("decoder: loaded from the checkpoint")
    else:
        vae.requires_grad_(False)
        vae.decoder.requires_grad_(True)
        vae.post_quant_conv.requires_grad_(True)
        run_stage(
            "decoder", vae, decoder_loss_fn(vae, vae_data, generator), args.decoder_steps,
            DECODER_LR, 50, state, checkpoint, generator, log,
        )  # fmt: skip
        state.update(
            vae_done=True, decoder_done=True, vae_final=vae.state_dict(),
            decoder_seconds=elapsed(), stage="unet", step=0, generator=generator.get_state(),
            torch_rng=torch.get_rng_state(),
        )  # fmt: skip
        state.pop("decoder_model", None)
        checkpoint.save({k: v for k, v in state.items() if k != "start"})
    vae.requires_grad_(False)
    vae.eval()
    psnr_1x, _ = reconstruction_scores(vae, heldout_images(RESOLUTION))
    log(f"VAE reconstruction on held-out images: {np.mean(list(psnr_1x.values())):.2f} dB")

    # Stage 2: the UNet
    components = ru.Components(
        args.output_dir, tokenizer, text_encoder, vae, unet, dict(NOISE_SCHEDULE)
    )
    unet_curve = run_stage(
        "unet", unet, unet_loss_fn(components, data, generator), args.unet_steps, UNET_LR, 200,
        state, checkpoint, generator, log,
    )  # fmt: skip
    unet_seconds = elapsed()
    if not args.skip_measurements:
        log("measuring: VAE, colour-swap probe, small-hole inpainting")
    record = training_record(args, state, parent, args.command, unet_curve, unet_seconds)
    record.update(
        vae_scaling_factor=vae.config.scaling_factor,
        latent_statistics_before_folding=state["latent_statistics"],
        **({} if args.skip_measurements else measurements(components)),
    )
    record["total_seconds"] = round(elapsed(), 1)
    record["runs"][-1]["seconds"] = record["total_seconds"]
    record["total_seconds_all_runs"] = round(sum(r["seconds"] for r in record["runs"]), 1)
    # perf/bench_recipe.py chose the parent's fine-tuning recipe for its UNet: still valid when
    # only the decoder moved
    keep = ()
    if parent is not None and not args.unet_steps:
        keep = tuple(p for p in [args.init_from / ru.RECIPE_FILE] if p.is_file())
    save_pipeline(args.output_dir, tokenizer, text_encoder, vae, unet, record, keep)
    checkpoint.remove()
    megabytes = sum(f.stat().st_size for f in args.output_dir.rglob("*") if f.is_file()) / 1e6
    log(f"wrote {args.output_dir} ({megabytes:.1f} MB)")
    return record


def training_record(args, state: dict, parent: dict | None, command, unet_curve, seconds) -> dict:
    """The record's training fields. A run continuing a trained folder (--init_from) keeps its
    parent's fields, adds its own steps to them and appends itself to `runs`."""
    import torch

    def final(curve: list) -> float | None:
        return round(float(np.mean(curve[-100:])), 5) if curve else None

    this_run = {
        "command": command,
        "seed": args.seed,
        "decoder_steps": args.decoder_steps,
        "unet_steps": args.unet_steps,
    }
    if parent is None:
        this_run["vae_steps"] = args.vae_steps
    record = {k: v for k, v in (parent or {}).items() if k in TRAINING_FIELDS}
    earlier = (parent or {}).get("runs") or (
        [{"command": parent["command"], "seconds": parent["total_seconds"]}] if parent else []
    )
    record.update(
        command=command,
        runs=[*earlier, this_run],
        decoder_steps=record.get("decoder_steps", 0) + args.decoder_steps,
        unet_steps=record.get("unet_steps", 0) + args.unet_steps,
    )
    if parent is None:
        record.update(
            seed=args.seed,
            resolution=RESOLUTION,
            batch_size=BATCH_SIZE,
            vae_steps=args.vae_steps,
            vae_seconds=round(state["vae_seconds"], 1),
            vae_final_loss=final(state["vae_curve"]),
        )
    record.update(
        decoder_seconds=round(state["decoder_seconds"], 1),
        training_seconds=round(seconds, 1),
        torch_threads=torch.get_num_threads(),
        machine=f"{platform.machine()}, {platform.processor() or 'cpu'}",
        trained_on=f"{PROCEDURAL_FRACTION:.0%} procedural dead-leaves images, the rest "
        "scikit-image photos reserved in make_example_scenes.RESERVED (mild tints, no channel "
        "swaps); the decoder stage also on recoloured copies of them",
        noise_schedule="SD2 betas rescaled to zero terminal SNR, v-prediction, trailing timesteps",
    )
    if state.get("decoder_curve"):
        record["decoder_final_loss"] = final(state["decoder_curve"])
    if unet_curve:
        record["unet_final_loss"] = final(unet_curve)
    return record


def steps(text: str) -> int:
    """argparse type: a step count, 0 or more (0 skips the stage)."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=ru.HelpFormatter)
    p.add_argument("--output_dir", type=Path, default=ru.TOY_MODEL, help="pipeline folder to write")
    p.add_argument("--vae_steps", type=steps, default=VAE_STEPS, help="VAE training steps")
    p.add_argument(
        "--decoder_steps",
        type=steps,
        default=DECODER_STEPS,
        help="steps of the decoder stage (the decoder alone, on recoloured images, with a "
        "mean-colour loss)",
    )
    p.add_argument("--unet_steps", type=steps, default=UNET_STEPS, help="UNet training steps")
    p.add_argument(
        "--init_from",
        type=Path,
        default=None,
        help="continue a trained toy folder instead of starting from random weights: its VAE "
        "stage is not repeated; --decoder_steps and --unet_steps more steps are trained (0 "
        "skips a stage) and its record's runs are kept",
    )
    p.add_argument("--seed", type=int, default=0, help="initialisation and data seed")
    p.add_argument(
        "--measure_only",
        action="store_true",
        help="train nothing: measure the model in --output_dir again and update its record",
    )
    p.add_argument(
        "--skip_measurements",
        action="store_true",
        help="write the folder without measuring it (about a minute saved; smoke runs). "
        "--measure_only measures it later",
    )
    p.add_argument(
        "--checkpoint_dir",
        type=Path,
        default=CHECKPOINT_DIR,
        help="where the resumable checkpoint lives while training; removed when done",
    )
    argv = sys.argv[1:] if argv is None else [str(a) for a in argv]
    args = p.parse_args(argv)
    if args.init_from and not (args.init_from / RECORD_FILE).is_file():
        p.error(
            f"--init_from {args.init_from}: no {RECORD_FILE} there; pass a folder that "
            "train_toy_model.py wrote (e.g. models/toy-sd2-inpainting)"
        )
    args.command = "python " + shlex.join([Path(__file__).name, *argv])  # for the record
    return args


def check_output_dir(output_dir: Path, measure_only: bool) -> None:
    """Before any model loads: --measure_only needs a toy folder with its record; training may
    replace only an empty folder or a toy model folder (its record is there), never a user's."""
    record = output_dir / RECORD_FILE
    if measure_only:
        if not record.is_file() or not (output_dir / "model_index.json").is_file():
            raise ru.SceneError(
                f"{output_dir}: not a toy model folder (no {RECORD_FILE} and model_index.json); "
                "--measure_only measures a folder this script wrote: pass its --output_dir"
            )
        return
    if output_dir.is_file():
        raise ru.SceneError(f"--output_dir {output_dir} is a file: pass a folder")
    if output_dir.is_dir() and any(output_dir.iterdir()) and not record.is_file():
        raise ru.SceneError(
            f"--output_dir {output_dir} holds files this script did not write (no {RECORD_FILE}); "
            "the model folder replaces it whole: choose a new or empty --output_dir"
        )
    parent = output_dir.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise ru.SceneError(
            f"--output_dir {output_dir}: {parent} is not a writable folder; choose another"
        )


def main(argv=None) -> int:
    args = parse_args(argv)

    def run():
        check_output_dir(args.output_dir, args.measure_only)  # before the libraries' imports
        ru.quiet_libraries()
        if args.measure_only:
            record = measure_only(args.output_dir, args.command)
            keys = ("vae_psnr_db_mean", "small_hole_inpainting")
        else:
            record = train_toy_model(args)
            keys = ("total_seconds", "vae_psnr_db_mean")
        measured = "small_hole_inpainting" in record
        if measured and args.output_dir.resolve() == ru.TOY_MODEL.resolve() and write_docs(record):
            print(f"updated {DOCS.relative_to(ROOT)}")
        print(json.dumps({k: record[k] for k in keys if k in record}))

    return ru.run_main(
        run,
        interrupted=f"interrupted; a training run resumes from {args.checkpoint_dir} when "
        "started again with the same settings",
    )


if __name__ == "__main__":
    sys.exit(main())
