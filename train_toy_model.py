"""Train the toy base model: a small SD2-inpainting-shaped pipeline, on the CPU, offline.

The toy model has every part of Stable Diffusion 2 inpainting (VAE with latents at 1/8 of the
image, 9-channel UNet with cross-attention, CLIP text encoder, the real SD2 tokenizer, the SD2
noise schedule), small enough to commit. It learns generic inpainting from photos that
scikit-image ships and that no example scene uses (`make_example_scenes.RESERVED`), so the
example scenes stay unseen. Training has two stages, as Stable Diffusion's had:

1. the VAE (reconstruction loss + a small KL term), then its latent scaling factor is measured;
2. the UNet on the inpainting objective, with the VAE and the text encoder frozen, through the
   same `training_loss` and random masks that RealFill fine-tuning uses.

It then writes the pipeline with `save_pretrained` (atomically) and a training record
(`toy_model.json` in the folder: command, time, losses, and the VAE's reconstruction PSNR on the
example scenes' images, which training never saw).

    python train_toy_model.py                              # writes models/toy-sd2-inpainting
    python train_toy_model.py --vae_steps 50 --unet_steps 50 --output_dir /tmp/toy   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm.auto import tqdm

import realfill_utils as ru
from make_tiny_model import (
    SD2_SCHEDULER,
    save_sd2_pipeline,
    small_text_encoder,
    write_sd2_tokenizer,
)

RESOLUTION = 64  # px: the demo's resolution; the UNet trains at it, the VAE is checked at it
VAE_CROP = 32  # px: the VAE is fully convolutional, so it trains on small crops, 4x cheaper
VAE_STEPS = 2500
UNET_STEPS = 6000  # fewer leave a UNet that barely uses the known region (a measured finding)
BATCH_SIZE = 16
VAE_LR = 1e-3
UNET_LR = 1e-3
KL_WEIGHT = 1e-6  # as Stable Diffusion's VAE: latents stay close to deterministic codes
TRAIN_PROMPTS = ("", "a photo")  # no captions exist; the UNet sees an empty and a generic prompt
RECORD_FILE = "toy_model.json"
ROOT = Path(__file__).resolve().parent

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


# ---------------------------------------------------------------------------------------------
# Data: random crops of the reserved photos at several scales
# ---------------------------------------------------------------------------------------------
class PhotoCrops:
    """Random (3, size, size) crops in [-1, 1] of the reserved photos, at random scales, flips
    and (for the grey ones) random tints, drawn in memory from a small image pyramid."""

    def __init__(self, size: int, max_levels: int = 4):
        import skimage.data

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

    def sample(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        def randint(high: int) -> int:
            return int(torch.randint(high, (), generator=generator))

        crops = []
        for _ in range(batch_size):
            i = randint(len(self.levels))
            image = self.levels[i][randint(len(self.levels[i]))]
            y, x = randint(image.shape[1] - self.size + 1), randint(image.shape[2] - self.size + 1)
            crop = image[:, y : y + self.size, x : x + self.size].float() / 127.5 - 1
            if randint(2):
                crop = crop.flip(-1)
            # Colour variety from few photos: the grey ones get a random tint, the colour ones
            # a random order of their channels (a photo of a cat has colours none of them has).
            if self.grey[i]:
                tint = 0.4 + 0.6 * torch.rand(3, 1, 1, generator=generator)
                crop = (crop + 1) * tint - 1
            else:
                crop = crop[torch.randperm(3, generator=generator)]
            crops.append(crop)
        return torch.stack(crops)


def heldout_images(size: int) -> list[tuple[str, torch.Tensor]]:
    """The example scenes' ground truths and references, resized to `size` on the short side
    and centre-cropped to a multiple of 8: images the toy model never trains on."""
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


@torch.no_grad()
def reconstruction_psnr(vae, images: list[tuple[str, torch.Tensor]]) -> dict[str, float]:
    """PSNR (dB, 8-bit) of VAE encode (posterior mean) + decode, per image."""
    vae.eval()
    scores = {}
    for name, image in images:
        latent = vae.encode(image[None]).latent_dist.mode()
        decoded = vae.decode(latent).sample[0].clamp(-1, 1)
        a = ((image + 1) * 127.5).round()
        b = ((decoded + 1) * 127.5).round()
        mse = F.mse_loss(a, b).item()
        scores[name] = 10 * math.log10(255**2 / max(mse, 1e-10))
    return scores


def thumbnail_psnr(images: list[tuple[str, torch.Tensor]], factor: int) -> float:
    """Mean PSNR of a bicubic thumbnail at 1/factor scaled back up: what 3 channels at the
    latents' size keep, a yardstick for a VAE with 4."""
    scores = []
    for _, image in images:
        small = F.interpolate(image[None], scale_factor=1 / factor, mode="bicubic", antialias=True)
        back = F.interpolate(small, size=image.shape[-2:], mode="bicubic")[0].clamp(-1, 1)
        mse = F.mse_loss((image + 1) * 127.5, ((back + 1) * 127.5).round()).item()
        scores.append(10 * math.log10(255**2 / max(mse, 1e-10)))
    return float(np.mean(scores))


# ---------------------------------------------------------------------------------------------
# The two training stages
# ---------------------------------------------------------------------------------------------
def cosine_lr(optimizer, steps: int, warmup: int):
    from diffusers.optimization import get_cosine_schedule_with_warmup

    return get_cosine_schedule_with_warmup(optimizer, warmup, steps)


def train_vae(vae, crops: PhotoCrops, steps: int, generator: torch.Generator, log) -> list:
    """Reconstruction (L1 + MSE) + KL_WEIGHT * KL; returns the loss curve."""
    vae.train()
    optimizer = torch.optim.AdamW(vae.parameters(), lr=VAE_LR, weight_decay=0.0)
    schedule = cosine_lr(optimizer, steps, warmup=min(100, steps // 10))
    curve = []
    for step in tqdm(range(1, steps + 1), desc="VAE", unit="step", mininterval=2):
        images = crops.sample(BATCH_SIZE, generator)
        posterior = vae.encode(images).latent_dist
        decoded = vae.decode(posterior.sample(generator=generator)).sample
        loss = (
            F.l1_loss(decoded, images)
            + F.mse_loss(decoded, images)
            + KL_WEIGHT * posterior.kl().mean()
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        curve.append(loss.item())
        if step % 250 == 0 or step == steps:
            log(f"VAE step {step}/{steps}: loss {np.mean(curve[-250:]):.4f}")
    vae.eval()
    return curve


@torch.no_grad()
def latent_scaling_factor(vae, crops: PhotoCrops, generator: torch.Generator) -> float:
    """1 / std of the latents over 256 training crops, as SD's 0.18215 was chosen."""
    latents = [vae.encode(crops.sample(32, generator)).latent_dist.sample() for _ in range(8)]
    return float(1.0 / torch.cat(latents).std())


def train_unet(components, crops: PhotoCrops, steps: int, generator: torch.Generator, log):
    """The inpainting objective through RealFill's own loss and masks (nothing is "known-only"
    here, so every latent counts); returns the loss curve."""
    import train_realfill as tr

    unet = components.unet
    unet.train()
    models = tr.training_models(components, torch.device("cpu"), torch.float32)
    prompt_ids = tr.tokenize(components.tokenizer, TRAIN_PROMPTS[1])  # (1, 77)
    empty_ids = tr.tokenize(components.tokenizer, TRAIN_PROMPTS[0])
    optimizer = torch.optim.AdamW(unet.parameters(), lr=UNET_LR, weight_decay=1e-2)
    schedule = cosine_lr(optimizer, steps, warmup=min(200, steps // 10))
    curve = []
    size = crops.size
    no_hole = torch.zeros(BATCH_SIZE, 1, size, size)
    for step in tqdm(range(1, steps + 1), desc="UNet", unit="step", mininterval=2):
        images = crops.sample(BATCH_SIZE, generator)
        fill = torch.stack([tr.random_fill_mask(size, generator) for _ in range(BATCH_SIZE)])
        batch = {"images": images, "fill_mask": fill[:, None], "hole": no_hole}
        # training_loss draws its noise and prompt dropout from torch's global RNG (seeded)
        loss = tr.training_loss(batch, models, prompt_ids, empty_ids)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        curve.append(loss.item())
        if step % 250 == 0 or step == steps:
            log(f"UNet step {step}/{steps}: loss {np.mean(curve[-250:]):.4f}")
    unet.eval()
    return curve


# ---------------------------------------------------------------------------------------------
# Building and saving
# ---------------------------------------------------------------------------------------------
def build_untrained(seed: int):
    """Random VAE, UNet and text encoder of the toy architecture, and the SD2 tokenizer."""
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


def save_pipeline(output_dir: Path, tokenizer, text_encoder, vae, unet, record: dict) -> None:
    """save_pretrained into a temporary folder, then rename it onto output_dir."""
    with ru.atomic_path(output_dir, is_dir=True) as tmp:
        save_sd2_pipeline(tmp, tokenizer, text_encoder, vae, unet)
        (tmp / RECORD_FILE).write_text(json.dumps(record, indent=2) + "\n")


def train_toy_model(args: argparse.Namespace) -> dict:
    """Both stages, then save; returns the training record."""
    torch.manual_seed(args.seed)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    generator = torch.Generator().manual_seed(args.seed)
    start = time.perf_counter()

    def log(message: str) -> None:
        tqdm.write(f"[{time.perf_counter() - start:6.0f} s] {message}")

    heldout = heldout_images(RESOLUTION)
    crops, vae_crops = PhotoCrops(RESOLUTION), PhotoCrops(VAE_CROP)
    tokenizer, text_encoder, vae, unet = build_untrained(args.seed)
    vae_curve = train_vae(vae, vae_crops, args.vae_steps, generator, log)
    vae_seconds = time.perf_counter() - start
    psnr = reconstruction_psnr(vae, heldout)
    log(f"VAE reconstruction PSNR on held-out images: mean {np.mean(list(psnr.values())):.2f} dB")
    factor = 2 ** (len(vae.config.block_out_channels) - 1)
    heldout_2x = heldout_images(2 * RESOLUTION)
    psnr_2x = float(np.mean(list(reconstruction_psnr(vae, heldout_2x).values())))
    vae.register_to_config(scaling_factor=latent_scaling_factor(vae, crops, generator))
    vae.requires_grad_(False)
    scheduler = dict(SD2_SCHEDULER)
    components = ru.Components(args.output_dir, tokenizer, text_encoder, vae, unet, scheduler)
    unet_curve = train_unet(components, crops, args.unet_steps, generator, log)
    record = {
        "command": "python " + shlex.join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "seed": args.seed,
        "resolution": RESOLUTION,
        "batch_size": BATCH_SIZE,
        "vae_steps": args.vae_steps,
        "unet_steps": args.unet_steps,
        "vae_seconds": round(vae_seconds, 1),
        "total_seconds": round(time.perf_counter() - start, 1),
        "torch_threads": torch.get_num_threads(),
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}",
        "vae_final_loss": round(float(np.mean(vae_curve[-100:])), 5),
        "unet_final_loss": round(float(np.mean(unet_curve[-100:])), 5),
        "vae_scaling_factor": round(vae.config.scaling_factor, 5),
        "vae_psnr_db": {k: round(v, 2) for k, v in psnr.items()},
        "vae_psnr_db_mean": round(float(np.mean(list(psnr.values()))), 2),
        "vae_psnr_db_mean_at_2x_resolution": round(psnr_2x, 2),
        "bicubic_thumbnail_psnr_db_mean": round(thumbnail_psnr(heldout, factor), 2),
        "bicubic_thumbnail_psnr_db_mean_at_2x_resolution": round(
            thumbnail_psnr(heldout_2x, factor), 2
        ),
        "vae_downsampling_factor": factor,
        "trained_on": "scikit-image photos reserved in make_example_scenes.RESERVED",
        "psnr_on": "example scenes' gt and references (never trained on), short side "
        f"{RESOLUTION} px, VAE posterior mean",
    }
    save_pipeline(args.output_dir, tokenizer, text_encoder, vae, unet, record)
    megabytes = sum(f.stat().st_size for f in args.output_dir.rglob("*") if f.is_file()) / 1e6
    log(f"wrote {args.output_dir} ({megabytes:.1f} MB)")
    return record


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=ru.HelpFormatter)
    p.add_argument("--output_dir", type=Path, default=ru.TOY_MODEL)
    p.add_argument("--vae_steps", type=int, default=VAE_STEPS, help="VAE training steps")
    p.add_argument("--unet_steps", type=int, default=UNET_STEPS, help="UNet training steps")
    p.add_argument("--seed", type=int, default=0, help="initialisation and data seed")
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    ru.quiet_libraries()
    record = train_toy_model(args)
    print(json.dumps({k: record[k] for k in ("total_seconds", "vae_psnr_db_mean")}))


if __name__ == "__main__":
    main()
