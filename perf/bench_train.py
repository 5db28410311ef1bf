"""Training speed and memory, measured side by side; results go to perf/results/train*.

Part 1 (`--part speed`): steps/s and peak memory of `train_realfill.py` on the tiny model, true
batch 16, at 64 and 128 px, against a re-creation of the earlier public implementation's data
path (a PIL + torchvision Dataset re-read per sample and a DataLoader whose worker process is
started anew every step, as REFERENCE.md describes it) driving the same model, loss and
optimizer. Startup is excluded: each configuration runs twice with different step counts and
the difference is timed.

Part 3 (`--part prompts`): the text encoder run once per distinct prompt (`encode_prompts`)
against once per sample, side by side, alternating: a whole training step of the toy base at
its recipe (64 px, batch 16, full UNet), and the forward and backward of SD2's text encoder
alone (random weights) at batch 16, with LoRA on both.

Part 4 (`--part precision`): a whole training step of the toy base at its recipe, side by side,
alternating: fp32 VAE with PyTorch's per-tensor AdamW (before), the fused AdamW, and the fused
AdamW with the VAE in bf16 (`--vae_precision auto` on a CPU with native bf16); and how far the
bf16 VAE's latents are from the fp32 ones, against their spread.

Part 5 (`--part sampler`): drawing training batches at 512 px from scenes of phone-photo
size (4 references and the target): seconds per batch of 4 (the T4 recipe's micro-batch) and of
16 (the paper's batch), with the photos reduced once at load time (`SceneSampler`: short side
max(2 x resolution, 1024)) and drawn at full size (before), alternating; and the load time.

Part 2 (`--part memory`): the real recipe's architecture (SD2 inpainting, built offline from its
published configuration with random weights), single training steps on the CPU at 512 px, batch
1 and 2, with and without gradient checkpointing: peak resident memory of each, in a fresh
process. The GPU estimate in the Markdown output is derived from these, and says so.

    python perf/bench_train.py --part speed
    python perf/bench_train.py --part memory
    python perf/bench_train.py --part prompts
    python perf/bench_train.py --part precision
    python perf/bench_train.py --part sampler
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "perf" / "results"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import realfill_utils as ru  # noqa: E402


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- part 1: speed ---------------------------------------------------------------------------
def earlier_style_steps(model: str, scene: str, resolution: int, steps: int) -> None:
    """Train `steps` steps feeding batches the earlier implementation's way (see module doc)."""
    import numpy as np
    import torch
    from PIL import Image
    from torchvision import transforms

    import train_realfill as tr

    paths = sorted((Path(scene) / "ref").iterdir()) + [Path(scene) / "target" / "target.png"]
    mask_path = Path(scene) / "target" / "mask.png"

    class Files(torch.utils.data.Dataset):
        def __init__(self):
            self.crop = transforms.RandomResizedCrop(resolution, scale=tr.CROP_SCALE)
            self.to_tensor = transforms.Compose(
                [transforms.ToTensor(), transforms.Normalize([0.5], [0.5])]
            )

        def __len__(self):
            return 16  # padded to the full batch, as with --pad_to_full_batch

        def __getitem__(self, index):
            path = paths[index % len(paths)]
            image = self.to_tensor(self.crop(Image.open(path).convert("RGB")))
            hole = torch.zeros(1, resolution, resolution)
            if path.name == "target.png":
                hole = torch.from_numpy(
                    np.asarray(Image.open(mask_path).convert("L").resize((resolution,) * 2)) > 127
                ).float()[None]
            fill = torch.maximum(tr.random_fill_mask(resolution)[None], hole)
            return {"images": image, "fill_mask": fill, "hole": hole}

    components = ru.load_components(model)
    for m in (components.vae, components.unet, components.text_encoder):
        m.requires_grad_(False)
    ru.add_lora(components.unet, components.text_encoder, 8, 16, 0.1)
    params = [
        p for m in (components.unet, components.text_encoder) for p in m.parameters()
        if p.requires_grad
    ]  # fmt: skip
    # the VAE and the optimizer as train_realfill.py sets them: only the data path differs
    dtype = tr.vae_dtype("auto", torch.device("cpu"), torch.float32)
    components.vae.to(dtype, memory_format=torch.channels_last)
    optimizer = tr.make_optimizer([{"params": params, "lr": 2e-4}], False, 0.01)
    models = tr.training_models(components, torch.device("cpu"), torch.float32)
    prompt = tr.tokenize(components.tokenizer, ru.PROMPT)
    empty = tr.tokenize(components.tokenizer, "")
    for _ in range(steps):
        # A new DataLoader iterator per step: its worker process starts every time.
        loader = torch.utils.data.DataLoader(Files(), batch_size=16, num_workers=1, shuffle=True)
        batch = next(iter(loader))
        loss = tr.training_loss(batch, models, prompt, empty)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()


def time_run(kind: str, model: str, scene: str, resolution: int, steps: int, out: Path) -> dict:
    """Wall time and peak RSS of one training run in a fresh process."""
    if kind == "ours":
        cmd = [
            sys.executable, str(ROOT / "train_realfill.py"),
            "--pretrained_model_name_or_path", model, "--train_data_dir", scene,
            "--output_dir", str(out), "--resolution", str(resolution),
            "--train_batch_size", "16", "--max_train_steps", str(steps),
            "--checkpointing_steps", "0", "--validation_steps", "0", "--report_to", "none",
        ]  # fmt: skip
    else:
        cmd = [sys.executable, __file__, "--_earlier", model, scene, str(resolution), str(steps)]
    start = time.perf_counter()
    result = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if result.returncode:
        raise SystemExit(f"{kind} run failed:\n{result.stderr[-3000:]}")
    child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {"seconds": seconds, "peak_rss_mb_children_so_far": child}


def bench_speed(short: int, long: int) -> dict:
    from conftest import make_scene

    from make_tiny_model import build_tiny_model

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = str(build_tiny_model(tmp / "model"))
        scene = str(make_scene(tmp / "scene", size=(160, 128), hole=(40, 30, 120, 100)))
        for resolution in (64, 128):
            for kind in ("earlier-style", "ours"):
                a = time_run(kind, model, scene, resolution, short, tmp / f"o{kind}{resolution}a")
                b = time_run(kind, model, scene, resolution, long, tmp / f"o{kind}{resolution}b")
                steps_per_s = (long - short) / (b["seconds"] - a["seconds"])
                rows.append(
                    {"kind": kind, "resolution": resolution, "batch": 16,
                     "steps_per_s": round(steps_per_s, 2)}
                )  # fmt: skip
                print(rows[-1], flush=True)
    for resolution in (64, 128):
        pair = {r["kind"]: r["steps_per_s"] for r in rows if r["resolution"] == resolution}
        rows.append(
            {"kind": "speedup", "resolution": resolution,
             "ours_over_earlier": round(pair["ours"] / pair["earlier-style"], 2)}
        )  # fmt: skip
    return {"rows": rows, "short_steps": short, "long_steps": long}


def peak_memory_of_tiny_runs(resolution: int) -> float:
    """Peak RSS (MB) of a 3-step run of ours at `resolution`, batch 16, in a fresh process."""
    code = (
        "import resource, sys, runpy; sys.argv = sys.argv[1:]; "
        "runpy.run_path(sys.argv[0], run_name='__main__'); "
        "print('PEAK', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)"
    )
    from conftest import make_scene

    from make_tiny_model import build_tiny_model

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = str(build_tiny_model(tmp / "model"))
        scene = str(make_scene(tmp / "scene", size=(160, 128), hole=(40, 30, 120, 100)))
        result = subprocess.run(
            [
                sys.executable,
                "-c",
                code,
                str(ROOT / "train_realfill.py"),
                "--pretrained_model_name_or_path",
                model,
                "--train_data_dir",
                scene,
                "--output_dir",
                str(tmp / "out"),
                "--resolution",
                str(resolution),
                "--train_batch_size",
                "16",
                "--max_train_steps",
                "3",
                "--checkpointing_steps",
                "0",
                "--validation_steps",
                "0",
                "--report_to",
                "none",
            ],  # fmt: skip
            capture_output=True,
            text=True,
        )
    peak = [line for line in result.stdout.splitlines() if line.startswith("PEAK")]
    if not peak:
        raise SystemExit(result.stderr[-3000:])
    return round(float(peak[0].split()[1]))


# --- part 2: memory of the real architecture ------------------------------------------------
SD2_UNET = dict(
    sample_size=64, in_channels=9, out_channels=4, layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20), use_linear_projection=True,
)  # fmt: skip  # stable-diffusion-2-inpainting's published unet/config.json
SD2_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2,
    block_out_channels=(128, 256, 512, 512), sample_size=512,
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
)  # fmt: skip
SD2_TEXT = dict(
    vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_hidden_layers=23,
    num_attention_heads=16, max_position_embeddings=77, hidden_act="gelu", projection_dim=512,
)  # fmt: skip


def real_step(batch: int, checkpointing: bool) -> None:
    """One RealFill training step of the full-size architecture at 512 px on the CPU (fp32)."""
    import torch
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    import train_realfill as tr
    from make_tiny_model import SD2_SCHEDULER

    torch.manual_seed(0)
    unet, vae = UNet2DConditionModel(**SD2_UNET), AutoencoderKL(**SD2_VAE)
    text = CLIPTextModel(CLIPTextConfig(**SD2_TEXT))
    for m in (unet, vae, text):
        m.requires_grad_(False)
    ru.add_lora(unet, text, 8, 16, 0.1)
    if checkpointing:
        unet.enable_gradient_checkpointing()
        text.gradient_checkpointing_enable()
    params = [p for m in (unet, text) for p in m.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=2e-4)
    models = {
        "vae": vae, "unet": unet, "text_encoder": text,
        "noise_scheduler": DDPMScheduler(**SD2_SCHEDULER),
        "device": torch.device("cpu"), "weight_dtype": torch.float32,
    }  # fmt: skip
    ids = torch.zeros(1, 77, dtype=torch.long)
    batch_data = {
        "images": torch.rand(batch, 3, 512, 512) * 2 - 1,
        "fill_mask": (torch.rand(batch, 1, 512, 512) > 0.5).float(),
        "hole": torch.zeros(batch, 1, 512, 512),
    }
    unet.train()
    text.train()
    start = time.perf_counter()
    loss = tr.training_loss(batch_data, models, ids, ids)
    loss.backward()
    optimizer.step()
    counts = {
        "unet": sum(p.numel() for p in unet.parameters()),
        "text_encoder": sum(p.numel() for p in text.parameters()),
        "vae": sum(p.numel() for p in vae.parameters()),
        "lora": sum(p.numel() for p in params),
    }
    print(json.dumps({"step_seconds": time.perf_counter() - start, "params": counts,
                      "peak_rss_mb": peak_rss_mb()}))  # fmt: skip


def bench_memory() -> dict:
    rows = []
    for batch in (1, 2):
        for checkpointing in (False, True):
            result = subprocess.run(
                [sys.executable, __file__, "--_real_step", str(batch), str(int(checkpointing))],
                capture_output=True, text=True,
            )  # fmt: skip
            if result.returncode:
                raise SystemExit(result.stderr[-3000:])
            row = json.loads(result.stdout.strip().splitlines()[-1])
            row.update(batch=batch, gradient_checkpointing=checkpointing)
            rows.append(row)
            print(row, flush=True)
    return {"rows": rows, "note": "fp32, CPU, 512 px, random weights; measured"}


# --- parts 3 and 4: a whole training step of the toy base, variants side by side ---------------
def toy_training_step_parts() -> dict:
    """What a training step of the toy base at its recipe needs (on Custom/1, fp32 models):
    recipe, components (LoRA added, VAE frozen and channels-last), models, sampler, prompt and
    empty token ids, and the trained parameters."""
    import torch

    import train_realfill as tr

    toy = ROOT / "models" / "toy-sd2-inpainting"
    recipe = ru.Recipe.for_model(toy)
    components = ru.load_components(toy)
    ru.add_lora(components.unet, components.text_encoder, recipe.lora_rank, recipe.lora_alpha,
                recipe.lora_dropout, recipe.lora_target)  # fmt: skip
    components.vae.requires_grad_(False).to(memory_format=torch.channels_last)
    return {
        "recipe": recipe,
        "components": components,
        "models": tr.training_models(components, torch.device("cpu"), torch.float32),
        "sampler": tr.SceneSampler(
            ru.load_scene(ROOT / "data" / "Custom" / "1"), recipe.resolution
        ),  # fmt: skip
        "prompt": tr.tokenize(components.tokenizer, ru.PROMPT),
        "empty": tr.tokenize(components.tokenizer, ""),
        "params": [
            p
            for m in (components.unet, components.text_encoder)
            for p in m.parameters()
            if p.requires_grad
        ],  # fmt: skip
    }


def alternating_medians(variants: dict, repeats: int) -> dict[str, float]:
    """Median milliseconds of each variant (label -> callable), run in turn `repeats` times after
    two warm-up rounds, so that the machine's drift falls on all of them alike."""
    times = {label: [] for label in variants}
    for run in list(variants.values()) * 2:  # warm-up
        run()
    for _ in range(repeats):
        for label, run in variants.items():
            start = time.perf_counter()
            run()
            times[label].append(time.perf_counter() - start)
    return {k: round(1000 * float(sorted(v)[len(v) // 2]), 1) for k, v in times.items()}


# --- part 3: the text encoder once per distinct prompt -----------------------------------------
def per_sample(text_encoder, input_ids):
    """The earlier way: the text encoder over every sample's ids."""
    return text_encoder(input_ids, return_dict=False)[0]


def bench_prompts(repeats: int) -> dict:
    import torch
    from peft import LoraConfig
    from transformers import CLIPTextConfig, CLIPTextModel

    import train_realfill as tr

    torch.manual_seed(0)
    rows = []

    def alternate(name: str, step) -> None:
        ms = alternating_medians({"per sample": lambda: step(per_sample),
                                  "per distinct prompt": lambda: step(tr.encode_prompts)},
                                 repeats)  # fmt: skip
        speedup = round(ms["per sample"] / ms["per distinct prompt"], 2)
        rows.append({"what": name, "median_ms": ms, "speedup": speedup})
        print(rows[-1], flush=True)

    # a whole step of the toy base at its recipe
    toy = toy_training_step_parts()
    recipe, models, sampler = toy["recipe"], toy["models"], toy["sampler"]
    prompt, empty = toy["prompt"], toy["empty"]
    optimizer = torch.optim.AdamW(toy["params"], lr=1e-6)
    original = tr.encode_prompts

    def toy_step(encode) -> None:
        tr.encode_prompts = encode
        try:
            loss = tr.training_loss(sampler.sample(recipe.train_batch_size), models, prompt, empty)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        finally:
            tr.encode_prompts = original

    alternate(f"toy base: one training step, batch {recipe.train_batch_size}", toy_step)

    text = CLIPTextModel(CLIPTextConfig(**SD2_TEXT)).requires_grad_(False)
    text.add_adapter(
        LoraConfig(
            r=8,
            lora_alpha=16,
            lora_dropout=0.1,  # the paper's LoRA
            init_lora_weights="gaussian",
            target_modules=ru.TEXT_LORA_MODULES,
        )
    )
    text.train()
    ids = torch.cat([prompt if i % 4 else empty for i in range(16)])  # 25% dropped, as trained

    def text_step(encode) -> None:
        encode(text, ids).float().square().mean().backward()
        text.zero_grad()

    alternate("SD2 text encoder (random weights): forward + backward, batch 16", text_step)
    return {"rows": rows, "repeats": repeats, "torch_threads": torch.get_num_threads()}


# --- part 4: the VAE's precision and the fused optimizer -------------------------------------
def bench_precision(repeats: int) -> dict:
    import copy

    import torch

    import train_realfill as tr

    torch.manual_seed(0)
    toy = toy_training_step_parts()
    recipe, models, sampler = toy["recipe"], toy["models"], toy["sampler"]
    prompt, empty, params = toy["prompt"], toy["empty"], toy["params"]
    vae32 = toy["components"].vae
    vae16 = copy.deepcopy(vae32).to(torch.bfloat16)

    def groups() -> list[dict]:  # fresh per optimizer: one writes its defaults into its groups
        return [{"params": params, "lr": 1e-6}]

    fused = tr.make_optimizer(groups(), False, 0.01)
    assert fused.param_groups[0]["fused"], "make_optimizer did not build a fused AdamW"
    configs = {
        "fp32 VAE, per-tensor AdamW (before)": (vae32, torch.optim.AdamW(groups(), fused=False)),
        "fp32 VAE, fused AdamW": (vae32, fused),
        "bf16 VAE, fused AdamW (now)": (vae16, tr.make_optimizer(groups(), False, 0.01)),
    }

    def step(vae, optimizer) -> None:
        models["vae"] = vae
        loss = tr.training_loss(sampler.sample(recipe.train_batch_size), models, prompt, empty)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, tr.MAX_GRAD_NORM)
        optimizer.step()
        optimizer.zero_grad()

    ms = alternating_medians(
        {name: lambda config=config: step(*config) for name, config in configs.items()}, repeats
    )
    before = ms["fp32 VAE, per-tensor AdamW (before)"]
    rows = [{"what": k, "median_ms": v, "speedup": round(before / v, 2)} for k, v in ms.items()]

    with torch.no_grad():  # the posterior means of a few training batches, both precisions
        images = torch.cat([sampler.sample(recipe.train_batch_size)["images"] for _ in range(4)])
        mean32 = vae32.encode(images).latent_dist.mean
        mean16 = vae16.encode(images.bfloat16()).latent_dist.mean.float()
    scaling = vae32.config.scaling_factor
    difference = float((mean16 - mean32).pow(2).mean().sqrt()) * scaling
    # the noise the training adds to the latents: sqrt(1 - alpha_bar_t) of the latent, per t
    alphas = models["noise_scheduler"].alphas_cumprod
    noise_std = (1 - alphas).sqrt()
    return {
        "noise_std_at_t0": round(float(noise_std[0]), 4),
        "timesteps_with_noise_under_10x_difference": int((noise_std < 10 * difference).sum()),
        "timesteps": len(noise_std),
        "rows": rows,
        "repeats": repeats,
        "torch_threads": torch.get_num_threads(),
        "cpu_has_native_bf16": tr.cpu_has_native_bf16(),
        "latent_rms_difference": round(difference, 4),
        "latent_std": round(float(mean32.std()) * scaling, 4),
        "images": int(images.shape[0]),
    }


def markdown_precision(result: dict) -> str:
    lines = ["| one training step of the toy base at its recipe | median ms | speed-up |",
             "|---|---|---|"]  # fmt: skip
    for r in result["rows"]:
        lines.append(f"| {r['what']} | {r['median_ms']} | {r['speedup']}x |")
    lines.append(
        f"\nMedians of {result['repeats']} alternating repeats, {result['torch_threads']} torch "
        f"threads, CPU with native bf16: {result['cpu_has_native_bf16']}. The bf16 VAE's latents "
        f"(posterior means of {result['images']} training crops) differ from the fp32 ones by "
        f"{result['latent_rms_difference']} root-mean-square, against a spread (std) of "
        f"{result['latent_std']}. The noise the training adds to them has std "
        f"{result['noise_std_at_t0']} at t = 0, rising to 1; it is under 10x that difference at "
        f"{result['timesteps_with_noise_under_10x_difference']} of the {result['timesteps']} "
        "timesteps."
    )
    return "\n".join(lines) + "\n"


def markdown_prompts(result: dict) -> str:
    lines = [
        "| what | per sample (ms) | per distinct prompt (ms) | speed-up |",
        "|---|---|---|---|",
    ]
    for r in result["rows"]:
        ms = r["median_ms"]
        lines.append(f"| {r['what']} | {ms['per sample']} | {ms['per distinct prompt']} | "
                     f"{r['speedup']}x |")  # fmt: skip
    lines.append(f"\nMedians of {result['repeats']} alternating repeats, "
                 f"{result['torch_threads']} torch threads, CPU.")  # fmt: skip
    return "\n".join(lines) + "\n"


def markdown_speed(result: dict) -> str:
    lines = [
        "| data path | resolution | batch | steps/s |", "|---|---|---|---|",
    ]  # fmt: skip
    for r in result["rows"]:
        if r["kind"] == "speedup":
            continue
        lines.append(f"| {r['kind']} | {r['resolution']} | {r['batch']} | {r['steps_per_s']} |")
    for r in result["rows"]:
        if r["kind"] == "speedup":
            lines.append(f"\nSpeed-up at {r['resolution']} px: **{r['ours_over_earlier']}x**")
    lines.append("\nPeak memory (RSS) of a 3-step run, batch 16: " + ", ".join(
        f"{k} px: {v} MB" for k, v in result["peak_rss_mb"].items()))  # fmt: skip
    return "\n".join(lines) + "\n"


def markdown_memory(result: dict) -> str:
    rows = result["rows"]
    lines = [
        "| batch | gradient checkpointing | peak RSS (MB) | step (s) |", "|---|---|---|---|",
    ]  # fmt: skip
    for r in rows:
        lines.append(
            f"| {r['batch']} | {r['gradient_checkpointing']} | {round(r['peak_rss_mb'])} | "
            f"{r['step_seconds']:.1f} |"
        )
    params = rows[0]["params"]
    frozen = params["unet"] + params["text_encoder"] + params["vae"] - params["lora"]
    by_ckpt = {}
    for checkpointing in (False, True):
        one, two = (r["peak_rss_mb"] for r in rows if r["gradient_checkpointing"] == checkpointing)
        by_ckpt[checkpointing] = two - one  # memory per extra sample
    weights_fp16 = frozen * 2 / 2**20
    lora_state = params["lora"] * (4 + 4 + 2 * 1) / 2**20  # fp32 weight + grad, 8-bit Adam m, v
    lines.append("")
    lines.append(
        f"Parameters: UNet {params['unet'] / 1e6:.0f} M, text encoder "
        f"{params['text_encoder'] / 1e6:.0f} M, VAE {params['vae'] / 1e6:.0f} M, LoRA "
        f"{params['lora'] / 1e6:.2f} M (measured by counting)."
    )
    for checkpointing, per_sample in by_ckpt.items():
        activations16 = per_sample * 16 / 2  # fp16 activations are half of the fp32 ones
        total = weights_fp16 + lora_state + activations16
        lines.append(
            f"- Derived, batch 16, fp16 base weights, 8-bit Adam, gradient checkpointing "
            f"{'on' if checkpointing else 'off'}: weights {weights_fp16 / 1024:.1f} GB + LoRA "
            f"state {lora_state:.0f} MB + activations 16 x {per_sample / 2:.0f} MB "
            f"(half the measured fp32 per-sample increase) = about {total / 1024:.1f} GB "
            f"({'fits' if total < 15 * 1024 else 'does not fit'} a 16 GB card, before CUDA "
            "context and allocator overhead)."
        )
    return "\n".join(lines) + "\n"


# --- part 5: drawing batches from large photos ------------------------------------------------
PHOTO_SIZES = ((4032, 3024), (2730, 2048), (1365, 1024), (683, 512))  # (width, height)


def photo_scene(width: int, height: int, references: int = 4):
    """A scene of random photos of one size, with a hole in the target (timing only)."""
    from types import SimpleNamespace

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    photos = [
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
        for _ in range(references + 1)
    ]
    hole = np.zeros((height, width), bool)
    hole[height // 3 : height // 2, width // 3 : width // 2] = True
    return SimpleNamespace(references=photos[:-1], target=photos[-1], fill_mask=hole)


def bench_sampler(repeats: int, resolution: int = 512) -> dict:
    import numpy as np
    import torch

    import train_realfill as tr

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    rows = []
    for width, height in PHOTO_SIZES:
        scene = photo_scene(width, height)
        samplers, load = {}, {}
        for way, floor in (("reduced", tr.MIN_SOURCE_SIDE), ("full size", 10**9)):
            saved, tr.MIN_SOURCE_SIDE = tr.MIN_SOURCE_SIDE, floor
            try:
                start = time.perf_counter()
                samplers[way] = tr.SceneSampler(scene, resolution)
                load[way] = time.perf_counter() - start
            finally:
                tr.MIN_SOURCE_SIDE = saved
        row = {"photo": f"{width}x{height}", "load_s": load,
               "kept_side": min(samplers["reduced"].images[0].shape[1:])}  # fmt: skip
        for batch in (4, 16):
            times = {way: [] for way in samplers}
            generator = torch.Generator().manual_seed(0)
            for _ in range(repeats):  # alternating, so that the machine's load hits both
                for way, sampler in samplers.items():
                    start = time.perf_counter()
                    sampler.sample(batch, generator)
                    times[way].append(time.perf_counter() - start)
            row[f"batch_{batch}_s"] = {way: float(np.median(t)) for way, t in times.items()}
        rows.append(row)
        print(json.dumps(row), flush=True)
    return {"resolution": resolution, "repeats": repeats, "rows": rows,
            "threads": torch.get_num_threads()}  # fmt: skip


def markdown_sampler(result: dict) -> str:
    lines = [
        f"Training batches drawn at {result['resolution']} px from 4 references and a target "
        f"of one size (median of {result['repeats']} alternating repeats, "
        f"{result['threads']} threads).",
        "",
        "| photos | short side kept | batch 4, full size s | batch 4, reduced s | "
        "batch 16, full size s | batch 16, reduced s | speed-up (16) | load, full / reduced s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        b4, b16, load = r["batch_4_s"], r["batch_16_s"], r["load_s"]
        lines.append(
            f"| {r['photo']} | {r['kept_side']} | {b4['full size']:.3f} | {b4['reduced']:.3f} | "
            f"{b16['full size']:.3f} | {b16['reduced']:.3f} | "
            f"{b16['full size'] / b16['reduced']:.1f}x | "
            f"{load['full size']:.2f} / {load['reduced']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--_earlier":
        model, scene, resolution, steps = sys.argv[2:6]
        earlier_style_steps(model, scene, int(resolution), int(steps))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--_real_step":
        real_step(int(sys.argv[2]), bool(int(sys.argv[3])))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=ru.HelpFormatter)
    parser.add_argument(
        "--part", choices=["speed", "memory", "prompts", "precision", "sampler"], required=True,
        help="what to measure (see above)",
    )  # fmt: skip
    parser.add_argument("--repeats", type=int, default=15, help="timed repeats")
    parser.add_argument("--short", type=int, default=5, help="steps of the first timed run")
    parser.add_argument("--long", type=int, default=25, help="steps of the second timed run")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    RESULTS.mkdir(parents=True, exist_ok=True)

    if args.part == "speed":
        result = bench_speed(args.short, args.long)
        result["peak_rss_mb"] = {r: peak_memory_of_tiny_runs(r) for r in (64, 128)}
        text = markdown_speed(result)
    elif args.part == "prompts":
        result = bench_prompts(args.repeats)
        text = markdown_prompts(result)
    elif args.part == "precision":
        result = bench_precision(args.repeats)
        text = markdown_precision(result)
    elif args.part == "sampler":
        result = bench_sampler(args.repeats)
        text = markdown_sampler(result)
    else:
        result = bench_memory()
        text = markdown_memory(result)
    result["command"] = (
        f"python perf/bench_train.py --part {args.part}"
        + (f" --short {args.short} --long {args.long}" if args.part == "speed" else "")
        + (f" --repeats {args.repeats}" if args.part in ("prompts", "precision", "sampler") else "")
    )
    result["cpu_count"] = os.cpu_count()
    ru.atomic_write_json(result, RESULTS / f"train_{args.part}.json")
    (RESULTS / f"train_{args.part}.md").write_text(f"`{result['command']}`\n\n{text}")
    print(text)


if __name__ == "__main__":
    main()
