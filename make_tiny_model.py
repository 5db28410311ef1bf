"""Write a tiny, randomly initialised SD2-inpainting-shaped pipeline folder, offline.

It has every part of the real model (9-channel UNet with cross-attention, VAE, CLIP text
encoder, the real SD2 tokenizer rebuilt from open_clip's bundled BPE vocabulary, the SD2
noise schedule) at a size that trains on a laptop CPU. Every script loads it through
`--pretrained_model_name_or_path`, exactly like the real base model. Its outputs are noise:
it is for exercising code, not for looking at.

    python make_tiny_model.py --output_dir models/tiny-sd2-inpainting
"""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path

import realfill_utils as ru

SD2_SCHEDULER = dict(  # stable-diffusion-2-inpainting's noise schedule (epsilon prediction)
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    prediction_type="epsilon",
    clip_sample=False,
    steps_offset=1,
)


def bytes_to_unicode() -> dict[int, str]:
    """CLIP's reversible byte -> printable-character table (the BPE alphabet)."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return dict(zip(printable, map(chr, chars), strict=True))


def write_sd2_tokenizer(out_dir: Path) -> None:
    """Write SD2's CLIP tokenizer (49,408 tokens, pad "!") from open_clip's BPE merges."""
    import open_clip

    bpe = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    with gzip.open(bpe, "rt", encoding="utf-8") as f:
        merges = f.read().split("\n")[1 : 49152 - 256 - 2 + 1]
    merges = [tuple(m.split()) for m in merges]
    alphabet = list(bytes_to_unicode().values())
    tokens = alphabet + [a + "</w>" for a in alphabet] + ["".join(m) for m in merges]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}))
    (out_dir / "merges.txt").write_text(
        "#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n"
    )
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": 77,
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": "!",  # SD2's choice (id 0); SD1 pads with <|endoftext|>
        "do_lower_case": True,
        "errors": "replace",
    }
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    special = {k: config[k] for k in ("bos_token", "eos_token", "unk_token", "pad_token")}
    (out_dir / "special_tokens_map.json").write_text(json.dumps(special, indent=2))


def build_tiny_model(output_dir: str | Path, seed: int = 0, sample_size: int = 32) -> Path:
    """Save a tiny random SD2-inpainting pipeline with `save_pretrained`; return its folder."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTokenizer

    output_dir = Path(output_dir)
    write_sd2_tokenizer(output_dir / "tokenizer")
    tokenizer = CLIPTokenizer.from_pretrained(output_dir / "tokenizer")
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=sample_size,
        in_channels=9,  # noisy latents (4) + mask (1) + masked-image latents (4)
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        # attention only at the lower resolution, as SD2 has none at its deepest: keeps it cheap
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=(2, 4),
        use_linear_projection=True,  # as SD2
        norm_num_groups=8,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        # four blocks, so latents are 1/8 of the image as in SD2: 512 px -> 64x64 latents
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(16, 32, 32, 32),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=sample_size * 2,
    )
    text_encoder = small_text_encoder(tokenizer)
    save_sd2_pipeline(output_dir, tokenizer, text_encoder, vae, unet)
    return output_dir


def small_text_encoder(tokenizer):
    """A random CLIP text encoder of width 32 over the tokenizer's full vocabulary (the tiny and
    the toy model share it; its 49,408-token embedding is most of its 6 MB)."""
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=77,
            hidden_act="gelu",
            projection_dim=32,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )


def save_sd2_pipeline(output_dir: Path, tokenizer, text_encoder, vae, unet) -> None:
    """Write the parts as an SD2 inpainting pipeline folder (SD2's noise schedule, no safety
    checker), the layout every script loads with from_pretrained."""
    from diffusers import DDPMScheduler, StableDiffusionInpaintPipeline

    StableDiffusionInpaintPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=DDPMScheduler(**SD2_SCHEDULER),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    ).save_pretrained(output_dir)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=ru.HelpFormatter)
    parser.add_argument(
        "--output_dir",
        type=Path,
        default=Path("models/tiny-sd2-inpainting"),
        help="pipeline folder to write (pass it as --pretrained_model_name_or_path)",
    )
    parser.add_argument("--seed", type=int, default=0, help="weight initialisation seed")
    args = parser.parse_args()
    print(build_tiny_model(args.output_dir, seed=args.seed))


if __name__ == "__main__":
    main()
