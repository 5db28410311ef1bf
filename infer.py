"""Complete a target image with a trained RealFill model: write 0.png .. N-1.png and
completions.json into --output_dir.

Each completion is generated at the training resolution (aspect kept), brought back to the
target's original size and alpha-blended over the ORIGINAL target with a feathered mask, so
every pixel farther than --feather_radius from the hole is the target's own. Image i is seeded
with --seed + i by its own generator: any single image can be regenerated alone
(`--seed <its seed> --num_images 1`) and comes out the same, whatever the batch size.

    python infer.py --model_path RealBench-23-model \\
        --validation_image RealBench/23/target/target.png \\
        --validation_mask RealBench/23/target/mask.png \\
        --output_dir results/RealBench-23-results

    # the paper samples with DDPM, 200 steps; a faster sampler by flag:
    accelerate launch infer.py ... --scheduler dpmsolver++ --num_inference_steps 25

    # geometry-guided: start from the warp fill, and weigh it against the diffusion per pixel
    python warp_fill.py --scene_dir RealBench/23 --output_dir results/RealBench-23-results-warp
    python infer.py ... --prior_image results/RealBench-23-results-warp/0.png \\
        --prior_uncertainty results/RealBench-23-results-warp/uncertainty.png

--model_path is the output folder of train_realfill.py (pytorch_lora_weights.safetensors +
realfill_settings.json, the base model is read from it) or a merged pipeline folder with
unet/ and text_encoder/ subfolders, as earlier implementations saved them.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

import realfill_utils as ru

SCHEMA_VERSION = 1  # of completions.json
BATCH_SIZE = 4  # images per pipeline call: SD2 at 512 px fits a 16 GB GPU in fp32 at 4
PRIOR_STRENGTH = 0.4  # --strength with --prior_image: the best on the toy (perf/results/recipe.md)
# With --prior_uncertainty: sampling starts from the prior only if the references cover at least
# this share of the hole; below it the prior is mostly a smooth inpainting guess (warp_fill.py's
# Telea fallback) that would pull the sampling towards a blur, so it starts from noise.
MIN_PRIOR_COVERAGE = 0.5
SCRIPT = "infer.py"  # the owner recorded in the output folder's manifest
COMPLETIONS_FILE = "completions.json"
RAW_DIR = "raw"  # --keep_raw: uncomposited generations at the model size
RANKING_FILE = "loftr_ranking_scores.json"  # loftr_ranking.py's scores of these completions
_NUMBERED_PNG = re.compile(r"^\d+\.png$")


# ---------------------------------------------------------------------------------------------
# The model folder
# ---------------------------------------------------------------------------------------------
@dataclass
class ModelSource:
    """What --model_path holds. `kind`: "lora" (train_realfill.py output) or "pipeline" (merged
    weights). `base_model`: where the parts the folder lacks come from; None = the folder
    itself is a complete pipeline."""

    path: Path
    kind: str
    base_model: str | None
    settings: dict = field(default_factory=dict)


def read_settings(path: Path) -> dict:
    """Read and check a realfill_settings.json written by train_realfill.py."""
    try:
        settings = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ru.SceneError(
            f"{path}: cannot read the training settings ({err}); re-run train_realfill.py or "
            "restore the file"
        ) from None
    if not isinstance(settings, dict) or not isinstance(settings.get("base_model"), str):
        raise ru.SceneError(f"{path}: no 'base_model' entry; this is not a RealFill settings file")
    version = settings.get("schema_version")
    if version != 1:
        raise ru.SceneError(
            f"{path}: schema_version {version!r}, this infer.py reads version 1; "
            "use the infer.py of the train_realfill.py that wrote it"
        )
    return settings


def _is_complete_pipeline(folder: Path) -> bool:
    parts = ("tokenizer", "text_encoder", "vae", "unet", "scheduler")
    return (folder / "model_index.json").is_file() and all((folder / p).is_dir() for p in parts)


def inspect_model_path(model_path: str | Path, base_override: str | None = None) -> ModelSource:
    """Classify --model_path without loading anything; every problem is a SceneError.

    A folder with pytorch_lora_weights.safetensors is a LoRA folder (even when train_realfill.py
    also saved a merged pipeline into it); otherwise unet/ + text_encoder/ make a merged folder.
    """
    path = Path(model_path).expanduser()
    if not path.exists():
        raise ru.SceneError(
            f"{path}: model folder not found; pass the --output_dir of train_realfill.py"
        )
    if not path.is_dir():
        raise ru.SceneError(
            f"{path}: is a file; --model_path takes the folder train_realfill.py wrote "
            f"(the one holding {ru.LORA_FILE})"
        )
    if (path / ru.LORA_FILE).is_file():
        ru.check_safetensors(path / ru.LORA_FILE)
        settings_path = path / ru.SETTINGS_FILE
        settings = read_settings(settings_path) if settings_path.is_file() else {}
        base = base_override or settings.get("base_model")
        if base is None:
            raise ru.SceneError(
                f"{path}: has {ru.LORA_FILE} but no {ru.SETTINGS_FILE}, so the base model it was "
                "trained on is unknown; pass it with --pretrained_model_name_or_path"
            )
        if Path(base).is_absolute() and not Path(base).exists():
            raise ru.SceneError(
                f"{settings_path}: its base model {base} no longer exists; pass the base model "
                "with --pretrained_model_name_or_path"
            )
        unet_config = path / ru.FULL_UNET_DIR / "config.json"
        if settings.get("lora_target") == ru.FULL_TARGET and not unet_config.is_file():
            raise ru.SceneError(
                f"{path}: trained with --lora_target full but {unet_config} is missing; "
                "the folder is incomplete, train it again"
            )
        return ModelSource(path.resolve(), "lora", base, settings)
    if (path / "unet").is_dir() and (path / "text_encoder").is_dir():
        for sub in ("unet", "text_encoder"):
            if not (path / sub / "config.json").is_file():
                raise ru.SceneError(
                    f"{path / sub}: no config.json; the merged pipeline folder is incomplete"
                )
        base = None if _is_complete_pipeline(path) else (base_override or ru.BASE_MODEL)
        return ModelSource(path.resolve(), "pipeline", base, {})
    contents = ", ".join(sorted(p.name for p in path.iterdir())[:8]) or "nothing"
    hint = ""
    if (path / "checkpoints").is_dir():
        hint = " (training checkpoints are resume states; let training finish to get the LoRA)"
    raise ru.SceneError(
        f"{path}: neither a RealFill LoRA folder ({ru.LORA_FILE} + {ru.SETTINGS_FILE}) nor a "
        f"merged pipeline folder (unet/ + text_encoder/); it holds {contents}{hint}"
    )


# ---------------------------------------------------------------------------------------------
# Device, dtype, pipeline
# ---------------------------------------------------------------------------------------------
def process_state(device: str = "auto"):
    """accelerate's per-process state (rank, count, device); a singleton, set up once here.

    Without CUDA, processes started by `accelerate launch --num_processes N` only form a group
    (gloo) when asked for the CPU explicitly, as Accelerator does for ACCELERATE_USE_CPU.
    """
    import torch
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    several = int(os.environ.get("WORLD_SIZE", "1")) > 1
    cpu = (
        device == "cpu"
        or parse_flag_from_env("ACCELERATE_USE_CPU")
        or (several and not torch.cuda.is_available())
    )
    return PartialState(cpu=cpu)


def resolve_device(device: str) -> str:
    """'auto': this process's device under accelerate launch, else CUDA if present, else CPU."""
    state = process_state(device)
    if device == "auto":
        return str(state.device)
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ru.SceneError(f"--device {device}: no CUDA GPU is visible here; use --device cpu")
    return device


def torch_dtype(mixed_precision: str, device: str):
    """The weight dtype for --mixed_precision; fp16 on a CPU is refused, not silently ignored."""
    import torch

    if mixed_precision == "fp16" and not device.startswith("cuda"):
        raise ru.SceneError(
            f"--mixed_precision fp16 needs a CUDA GPU but the device is {device}; "
            "use --mixed_precision bf16 or no"
        )
    return {"no": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[mixed_precision]


def load_model_components(source: ModelSource, dtype=None) -> ru.Components:
    """Tokenizer, text encoder, VAE, UNet and scheduler config of `source`, before any LoRA
    (a LoRA folder trained with --lora_target full brings its own UNet)."""
    from diffusers import UNet2DConditionModel

    if source.kind == "lora" or source.base_model is None:
        components = ru.load_components(source.base_model or source.path, dtype)
        if source.settings.get("lora_target") == ru.FULL_TARGET:
            components.unet = UNet2DConditionModel.from_pretrained(
                source.path, subfolder=ru.FULL_UNET_DIR, torch_dtype=dtype
            )
        return components
    from transformers import CLIPTextModel

    components = ru.load_components(source.base_model, dtype)  # tokenizer, VAE, scheduler
    components.unet = UNet2DConditionModel.from_pretrained(
        source.path, subfolder="unet", torch_dtype=dtype
    )
    components.text_encoder = CLIPTextModel.from_pretrained(
        source.path, subfolder="text_encoder", dtype=dtype
    )
    if components.unet.config.in_channels != 9:
        raise ru.SceneError(f"{source.path / 'unet'}: not a 9-channel inpainting UNet")
    if components.text_encoder.config.vocab_size != len(components.tokenizer):
        raise ru.SceneError(
            f"{source.path / 'text_encoder'}: its vocabulary does not match the tokenizer of "
            f"{source.base_model}; pass the matching base with --pretrained_model_name_or_path"
        )
    return components


def load_pipeline(source: ModelSource, scheduler: str, dtype=None, device: str = "cpu"):
    """Build the inpainting pipeline for `source` (LoRA fused into the weights) on `device`.

    Returns (pipe, components); components.size_multiple is the size step the model accepts.
    """
    components = load_model_components(source, dtype)
    pipe = ru.make_pipeline(components, scheduler)
    if source.kind == "lora":
        try:
            pipe.load_lora_weights(str(source.path), weight_name=ru.LORA_FILE)
        except (RuntimeError, ValueError, KeyError, OSError) as err:
            raise ru.SceneError(
                f"{source.path / ru.LORA_FILE}: does not fit the base model {source.base_model} "
                f"({type(err).__name__}: {str(err).splitlines()[0][:200]}); pass the base it was "
                "trained on with --pretrained_model_name_or_path"
            ) from None
        pipe.fuse_lora()  # merged weights: sampling costs the same as the base model
        pipe.unload_lora_weights()
    pipe.to(device)
    return pipe, components


# ---------------------------------------------------------------------------------------------
# Generation
# ---------------------------------------------------------------------------------------------
def image_seeds(seed: int, num_images: int) -> list[int]:
    """Image i is seeded with seed + i."""
    return [seed + i for i in range(num_images)]


def complete(
    pipe,
    target: Image.Image,
    fill_mask: np.ndarray,
    seeds: list[int],
    *,
    batch_size: int = BATCH_SIZE,
    prompt: str = ru.PROMPT,
    resolution: int = ru.RESOLUTION,
    num_inference_steps: int = ru.NUM_INFERENCE_STEPS,
    guidance_scale: float = ru.GUIDANCE_SCALE,
    feather_radius: float = ru.FEATHER_RADIUS,
    multiple: int = 8,
    prior: Image.Image | None = None,
    strength: float = 1.0,
) -> Iterator[tuple[int, Image.Image, Image.Image]]:
    """Yield (seed, raw generation at model size, completion at the target's size) per seed.

    One pipeline call per batch of `batch_size` seeds; `fill_mask` is bool (H, W), True = fill,
    the size of `target`. The completion equals `target` outside the feathered band. With
    `prior` and `strength` < 1, sampling starts from the prior noised to `strength`.
    """
    for start in range(0, len(seeds), batch_size):
        batch = seeds[start : start + batch_size]
        raws = ru.generate(
            pipe,
            target,
            fill_mask,
            batch,
            prompt=prompt,
            resolution=resolution,
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            multiple=multiple,
            prior=prior,
            strength=strength,
        )
        for seed, raw in zip(batch, raws, strict=True):
            yield seed, raw, ru.composite(raw, target, fill_mask, feather_radius)


def output_entries(num_images: int, keep_raw: bool) -> list[str]:
    """The top-level names this script writes into --output_dir."""
    # The ranking of the completions belongs to them: a new run makes it stale, so it goes too.
    names = [COMPLETIONS_FILE, RANKING_FILE, *(f"{i}.png" for i in range(num_images))]
    return names + ([RAW_DIR] if keep_raw else [])


def clear_previous(output_dir: Path) -> None:
    """Delete an earlier run's numbered PNGs (also in raw/) and its completions.json, so a
    re-run with fewer images or an interrupted re-run never mixes with old results. Only
    entries an earlier infer.py recorded as its own (ru.owned_entries) are touched."""
    owned = ru.owned_entries(output_dir)
    for name in (COMPLETIONS_FILE, RANKING_FILE):
        if name in owned:
            (output_dir / name).unlink(missing_ok=True)
    for entry in output_dir.iterdir():
        if entry.name in owned and _NUMBERED_PNG.match(entry.name) and entry.is_file():
            entry.unlink()
    if RAW_DIR in owned and (output_dir / RAW_DIR).is_dir():
        for entry in (output_dir / RAW_DIR).iterdir():
            if _NUMBERED_PNG.match(entry.name) and entry.is_file():
                entry.unlink()


def scene_folder(image_path: Path, follow_links: bool = False) -> Path:
    """The scene a target image belongs to: <scene> for <scene>/target/target.png, else the
    image's own folder; as the path is written, or, with `follow_links`, where its links lead
    (a scene whose target/ or target.png is a link to elsewhere has both)."""
    image = Path(image_path).resolve() if follow_links else Path(os.path.abspath(image_path))
    folder = image.parent
    return folder.parent if folder.name == "target" else folder


def check_values(args: argparse.Namespace) -> None:
    """SceneError for flag values that cannot work together; reads no file, so the runners
    (refill.py, run_realbench.py) call it before their first stage too."""
    if not 0 < args.strength <= 1:
        raise ru.SceneError(f"--strength {args.strength}: must be in (0, 1]; 1 = pure noise")
    if args.prior_uncertainty is not None:
        if args.prior_image is None:
            raise ru.SceneError(
                f"--prior_uncertainty {args.prior_uncertainty} needs --prior_image: it says how "
                "far that prior can be trusted"
            )
        if args.num_images < 2:
            raise ru.SceneError(
                f"--prior_uncertainty needs --num_images 2 or more (got {args.num_images}): the "
                "completions' spread is the diffusion's side of the weighing"
            )


def check_inputs(args: argparse.Namespace):
    """Check target, mask, model folder and output folder without importing torch; return
    (target, fill_mask, model source, output folder, the input folders it may not overlap).
    Every problem is a SceneError."""
    target = ru.load_image(args.validation_image)
    fill_mask = ru.load_mask(args.validation_mask)
    ru.check_mask(fill_mask, Path(args.validation_mask), target.size, Path(args.validation_image))
    args.prior = None
    if args.prior_image is not None:
        args.prior = ru.load_image(args.prior_image)
        if args.prior.size != target.size:
            raise ru.SceneError(
                f"{args.prior_image} is {args.prior.size[0]}x{args.prior.size[1]} but the target "
                f"is {target.size[0]}x{target.size[1]}: the prior must be a completion of the "
                "target (e.g. warp_fill.py's 0.png)"
            )
    check_values(args)
    args.uncertainty, args.prior_coverage = None, None
    if args.prior_uncertainty is not None:
        picture = ru.load_image(args.prior_uncertainty).convert("L")
        if picture.size != target.size:
            raise ru.SceneError(
                f"{args.prior_uncertainty} is {picture.size[0]}x{picture.size[1]} but the "
                f"target is {target.size[0]}x{target.size[1]}: it must be the uncertainty.png "
                "warp_fill.py wrote with the prior"
            )
        from geometry import read_uncertainty

        args.uncertainty = read_uncertainty(picture)  # float (H, W) grey levels, inf = none
        seen = np.isfinite(args.uncertainty)
        args.prior_coverage = round(float(seen[fill_mask].mean()), 4)
    # What sampling starts from: the prior at --strength, or pure noise (1.0).
    args.sampling_strength = 1.0 if args.prior is None else args.strength
    if args.uncertainty is not None and args.prior_coverage < MIN_PRIOR_COVERAGE:
        args.sampling_strength = 1.0
        if ru.is_main_process():
            print(
                f"note: the references cover {args.prior_coverage:.0%} of the hole (under "
                f"{MIN_PRIOR_COVERAGE:.0%}): sampling starts from noise; the prior is still "
                "weighed in where it has an estimate"
            )
    source = inspect_model_path(args.model_path, args.pretrained_model_name_or_path)
    inputs = {
        "the scene": scene_folder(args.validation_image),
        "the scene (its links followed)": scene_folder(args.validation_image, follow_links=True),
        "the mask's folder": Path(os.path.abspath(args.validation_mask)).parent,
        "the mask's folder (its links followed)": Path(args.validation_mask).resolve().parent,
        "the model folder": source.path,
    }
    entries = output_entries(args.num_images, args.keep_raw)
    output_dir = ru.claim_output_dir(args.output_dir, SCRIPT, entries, inputs, record=False)
    return target, fill_mask, source, output_dir, inputs


# ---------------------------------------------------------------------------------------------
# The script
# ---------------------------------------------------------------------------------------------
def run(args: argparse.Namespace, progress: Callable | None = None) -> dict:
    """Validate everything, load the model, write the completions; return completions.json."""
    started = time.perf_counter()
    # 1. Inputs, model folder, output folder and device: all checked before any model loads.
    target, fill_mask, source, output_dir, inputs = check_inputs(args)
    if not ru.is_main_process():  # rank 0 holds the lock and records the outputs
        return _run(args, target, fill_mask, source, output_dir, started, progress)
    with ru.output_lock(output_dir, SCRIPT):  # a second run into this folder is refused
        entries = output_entries(args.num_images, args.keep_raw)
        ru.claim_output_dir(output_dir, SCRIPT, entries, inputs)  # checked again, recorded
        return _run(args, target, fill_mask, source, output_dir, started, progress)


def _run(args, target, fill_mask, source, output_dir, started, progress) -> dict:
    """Load the model and write the completions into the checked `output_dir`."""
    device = resolve_device(args.device)
    dtype = torch_dtype(args.mixed_precision, device)
    resolution = args.resolution or source.settings.get("resolution", ru.RESOLUTION)
    prompt = args.prompt if args.prompt is not None else source.settings.get("prompt", ru.PROMPT)

    state = process_state(args.device)
    ru.quiet_libraries()
    pipe, components = load_pipeline(source, args.scheduler, dtype, device)
    multiple = components.size_multiple
    loaded, loaded_cpu = time.perf_counter(), time.process_time()

    # 2. Generate: each process takes its share of the images; each writes its own files.
    seeds = image_seeds(args.seed, args.num_images)
    if state.is_main_process:
        clear_previous(output_dir)
        if args.keep_raw:
            (output_dir / RAW_DIR).mkdir(exist_ok=True)
    state.wait_for_everyone()
    from tqdm.auto import tqdm

    with state.split_between_processes(list(range(args.num_images))) as indices:
        bar = tqdm(
            total=args.num_images,
            unit="image",
            desc="completions",
            disable=not state.is_main_process,
        )
        stream = complete(
            pipe,
            target,
            fill_mask,
            [seeds[i] for i in indices],
            batch_size=args.batch_size,
            prompt=prompt,
            resolution=resolution,
            num_inference_steps=args.num_inference_steps,
            guidance_scale=args.guidance_scale,
            feather_radius=args.feather_radius,
            multiple=multiple,
            prior=args.prior,
            strength=args.sampling_strength,
        )
        for index, (_seed, raw, completion) in zip(indices, stream, strict=True):
            if args.keep_raw:
                ru.atomic_save_image(raw, output_dir / RAW_DIR / f"{index}.png")
            ru.atomic_save_image(completion, output_dir / f"{index}.png")
            bar.update(min(state.num_processes, bar.total - bar.n))  # others' progress: a guess
            if progress is not None:
                progress(index)
        bar.close()
    state.wait_for_everyone()
    prior_weight = None
    if args.uncertainty is not None and state.is_main_process:
        prior_weight = fuse_with_prior(args, output_dir, target, fill_mask)
    finished, finished_cpu = time.perf_counter(), time.process_time()

    import diffusers
    import torch

    width, height = ru.model_size(target.size, resolution, multiple)
    record = {
        "schema_version": SCHEMA_VERSION,
        "images": [
            {
                "file": f"{i}.png",
                "seed": seeds[i],
                "raw": f"{RAW_DIR}/{i}.png" if args.keep_raw else None,
            }
            for i in range(args.num_images)
        ],
        "seeds": seeds,
        "model_path": str(source.path),
        "model_kind": source.kind,
        "base_model": source.base_model or str(source.path),
        "validation_image": str(Path(args.validation_image).resolve()),
        "validation_mask": str(Path(args.validation_mask).resolve()),
        "prompt": prompt,
        "scheduler": args.scheduler,
        "num_inference_steps": args.num_inference_steps,
        "guidance_scale": args.guidance_scale,
        "resolution": resolution,
        "target_size": list(target.size),
        "model_size": [width, height],
        "feather_radius": args.feather_radius,
        "prior_image": str(Path(args.prior_image).resolve()) if args.prior_image else None,
        "strength": args.sampling_strength,  # 1.0: sampled from pure noise
        "prior_coverage": args.prior_coverage,  # share of the hole the prior has an estimate for
        "prior_uncertainty": (
            str(Path(args.prior_uncertainty).resolve()) if args.prior_uncertainty else None
        ),
        "prior_weight_in_hole": prior_weight,  # mean weight of the prior after fusing
        "batch_size": args.batch_size,
        "mixed_precision": args.mixed_precision,
        "device": device,
        "num_processes": state.num_processes,
        "timings": {
            "load_s": round(loaded - started, 3),
            "generate_s": round(finished - loaded, 3),
            "total_s": round(finished - started, 3),
            "per_image_s": round((finished - loaded) / args.num_images, 3),
            # CPU seconds of this process, all threads: less disturbed by a busy machine
            "generate_cpu_s": round(finished_cpu - loaded_cpu, 3),
        },
        "versions": {"torch": torch.__version__, "diffusers": diffusers.__version__},
    }
    if state.is_main_process:
        ru.atomic_write_json(record, output_dir / COMPLETIONS_FILE)  # last: marks a full run
    return record


def fuse_with_prior(args, output_dir: Path, target, fill_mask: np.ndarray) -> float:
    """Rewrite the completions fused with the prior (geometry.fuse); return the prior's mean
    weight inside the hole."""
    from geometry import fuse

    files = [output_dir / f"{i}.png" for i in range(args.num_images)]
    completions = [np.asarray(ru.load_image(f).convert("RGB")) for f in files]
    prior = np.asarray(args.prior.convert("RGB"))
    fused, weight = fuse(completions, prior, args.uncertainty, fill_mask)
    for image, path in zip(fused, files, strict=True):
        ru.atomic_save_image(Image.fromarray(image), path)
    return round(float(weight[fill_mask].mean()), 4)


def _non_negative_float(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=ru.HelpFormatter)
    p.add_argument(
        "--model_path",
        type=Path,
        required=True,
        help="train_realfill.py output folder or a merged pipeline folder",
    )
    p.add_argument("--validation_image", type=Path, required=True, help="the target to complete")
    p.add_argument("--validation_mask", type=Path, required=True, help="white (255) = fill")
    p.add_argument("--output_dir", type=Path, required=True, help="gets 0.png .. N-1.png")
    p.add_argument("--seed", type=int, default=0, help="image i is seeded with seed + i")
    p.add_argument(
        "--num_images", type=ru.positive_int, default=ru.NUM_IMAGES, help="completions to write"
    )
    p.add_argument(
        "--batch_size",
        type=ru.positive_int,
        default=BATCH_SIZE,
        help="images per pipeline call; does not change the images",
    )
    p.add_argument(
        "--scheduler", default=ru.SCHEDULER, choices=list(ru.SCHEDULERS), help="the paper: ddpm"
    )
    p.add_argument(
        "--num_inference_steps",
        type=ru.positive_int,
        default=ru.NUM_INFERENCE_STEPS,
        help="the paper: 200 (ddpm); dpmsolver++ needs 20-30",
    )
    p.add_argument(
        "--guidance_scale",
        type=float,
        default=ru.GUIDANCE_SCALE,
        help="1.0 = no classifier-free guidance, as the paper",
    )
    p.add_argument(
        "--resolution",
        type=ru.positive_int,
        default=None,
        help=f"shorter side the model runs at (default: the training one, else {ru.RESOLUTION})",
    )
    p.add_argument(
        "--prompt", default=None, help=f"default: the training prompt, else '{ru.PROMPT}'"
    )
    p.add_argument(
        "--feather_radius",
        type=_non_negative_float,
        default=ru.FEATHER_RADIUS,
        help="px at the target's size; 0 = hard paste",
    )
    p.add_argument(
        "--prior_image",
        type=Path,
        default=None,
        help="start sampling from this completion of the target (e.g. warp_fill.py's 0.png) "
        "instead of pure noise; the known region still comes from the target",
    )
    p.add_argument(
        "--strength",
        type=float,
        default=PRIOR_STRENGTH,
        help="with --prior_image: how far the prior is noised (1 = pure noise, the prior ignored)",
    )
    p.add_argument(
        "--prior_uncertainty",
        type=Path,
        default=None,
        help="with --prior_image: its per-pixel expected error (warp_fill.py's uncertainty.png); "
        "each completion is then pulled towards the prior where the prior is surer than the "
        "diffusion (the completions' spread and their disagreement with it: geometry.fuse); "
        "covering under half the hole, sampling starts from noise",
    )
    p.add_argument(
        "--keep_raw",
        action="store_true",
        help=f"also write the uncomposited generations to {RAW_DIR}/",
    )
    p.add_argument(
        "--pretrained_model_name_or_path",
        default=None,
        help="base model: replaces the one in a LoRA folder's settings; for a merged folder, "
        f"supplies the parts it lacks (there: default {ru.BASE_MODEL})",
    )
    p.add_argument(
        "--mixed_precision",
        default="no",
        choices=ru.MIXED_PRECISIONS,
        help="weight dtype; fp16 needs CUDA",
    )
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    done = []

    def complete():
        record = run(args, progress=done.append)
        if ru.is_main_process():
            t = record["timings"]
            width, height = record["model_size"]
            print(
                f"{args.num_images} completions of {record['target_size'][0]}x"
                f"{record['target_size'][1]} (model {width}x{height}, {args.scheduler} "
                f"{args.num_inference_steps} steps) -> {args.output_dir} in {t['total_s']:.1f} s "
                f"(load {t['load_s']:.1f} s, {t['per_image_s']:.2f} s/image)"
            )

    return ru.run_main(
        complete,
        interrupted=lambda: (
            f"interrupted: {len(done)} completions written to "
            f"{args.output_dir}, no {COMPLETIONS_FILE}; run again to regenerate them all"
        ),
    )


if __name__ == "__main__":
    sys.exit(main())
