"""Measure the real recipe on one CUDA GPU, offline, in a few minutes; results go to
perf/results/gpu_<gpu-name>.json and .md.

Every part runs in its own process, so that a failure (or an out-of-memory) of one is recorded
and the others still run, and each starts with empty GPU memory:

1. build: the full-size SD2-inpainting architecture from its published configuration, random
   weights, with the real SD2 tokenizer, written as a local pipeline folder;
2. train_t4: `train_realfill.train` with the Colab T4 recipe (fp16 frozen weights, 8-bit Adam,
   gradient checkpointing, SDPA; batch 4 x accumulation 4) at 512 px: peak allocated and
   reserved memory, seconds per optimizer step;
3. train_paper: the paper's recipe (batch 16, bf16, no checkpointing) with SDPA, with xformers
   where it imports, and optionally torch.compile / channels-last: the same figures and the
   projected time of 2,000 steps;
4. infer: `infer.run` on the same folder, 16 completions at 512 px in fp16, DPM-Solver++ 25
   (batch 16 and infer.py's default batch) and DDPM 200: seconds;
5. loftr and metrics: `loftr_ranking.rank_completions` with untrained LoFTR, and the project's
   LPIPS / DINO / CLIP scorers (benchmark/) given random weights: seconds per pair, images/s.

Step times are measured between the starts of successive optimizer steps (data drawing, the
forward and backward passes, clipping and the optimizer step), after warm-up steps.

    python perf/gpu_kit.py                         # on a lent GPU (budget 7.5 minutes)
    python perf/gpu_kit.py --variants sdpa xformers compile channels_last
    python perf/gpu_kit.py --smoke --output /tmp/gpu_kit_smoke.json   # CPU check, tiny model
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import realfill_utils as ru  # noqa: E402
from realfill_utils import atomic_path, atomic_write_json  # noqa: E402

RESULTS = ROOT / "perf" / "results"
SCHEMA_VERSION = 1  # of the results file; the keys are documented in docs/gpu_kit.md
PAPER_STEPS = 2000  # the paper's step count, for the projected training time
VARIANTS = ("sdpa", "xformers", "compile", "channels_last")  # paper-recipe attention / options
DEFAULT_VARIANTS = ("sdpa", "xformers")  # compile costs minutes of compilation: opt in
BUDGET_S = 450  # whole run, GPU mode: under the 8 minutes the kit must fit in
# The goals; measured only on a GPU, never claimed from a smoke run.
T4_PEAK_GOAL_GB = 15.0  # decimal GB of reserved memory: must fit a 16 GB T4 with room
PAPER_2000_STEPS_GOAL_S = 600.0  # on one H100/H200-class GPU
INFER_16_GOAL_S = 15.0  # 16 completions at 512 px, DPM-Solver++ 25


def settings(smoke: bool) -> dict:
    """Sizes and recipes of a run; smoke: the same code paths, tiny model, CPU, 64 px."""
    if not smoke:
        return {
            "mode": "gpu",
            "device": "cuda",
            "resolution": 512,
            "t4": {"batch": 4, "accumulation": 4, "mixed_precision": "fp16"},
            "paper": {"batch": 16, "accumulation": 1, "mixed_precision": "bf16"},
            "infer_mixed_precision": "fp16",
            "num_images": 16,
            # (scheduler, steps, batch size): the goal's run first, then infer.py's default
            # batch, then the paper's sampler
            "infer_runs": [["dpmsolver++", 25, 16], ["dpmsolver++", 25, 4], ["ddpm", 200, 16]],
            "loftr": {"candidates": 16, "references": 3, "rows": [[256, False], [256, True]]},
            "metric_items": 16,
            "timeouts": {"env": 60, "build": 180, "train": 240, "infer": 300, "other": 120},
        }
    return {
        "mode": "smoke",
        "device": "cpu",
        "resolution": 64,
        # fp16 needs CUDA (train_realfill refuses it on a CPU), so the T4 recipe runs in fp32
        "t4": {"batch": 2, "accumulation": 2, "mixed_precision": "no"},
        "paper": {"batch": 4, "accumulation": 1, "mixed_precision": "bf16"},
        "infer_mixed_precision": "no",
        "num_images": 2,
        "infer_runs": [["dpmsolver++", 2, 2], ["ddpm", 2, 1]],
        "loftr": {"candidates": 2, "references": 1, "rows": [[64, False], [64, True]]},
        "metric_items": 2,
        "timeouts": {"env": 120, "build": 180, "train": 300, "infer": 300, "other": 300},
    }


# ---------------------------------------------------------------------------------------------
# Small helpers (pure, unit-tested)
# ---------------------------------------------------------------------------------------------
def slug(name: str) -> str:
    """'NVIDIA H200 NVL' -> 'nvidia-h200-nvl': a file-name-safe GPU name."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "unknown"


def step_seconds(marks: list[float], accumulation: int) -> list[float]:
    """Seconds of each optimizer step from the start times of its micro-batches.

    Step k starts at marks[k * accumulation]; its time runs to the next step's start, so the
    last step (which has no successor) is not timed.
    """
    starts = marks[::accumulation]
    return [b - a for a, b in zip(starts, starts[1:], strict=False)]


def gib(n_bytes: float | None) -> float | None:
    return None if n_bytes is None else round(n_bytes / 2**30, 3)


def describe(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:400] if text else ''}".rstrip(": ")


def write_scene(folder: Path, size: int, n_refs: int = 3) -> Path:
    """A RealBench-layout scene: references of other sizes, a size x size target whose centred
    hole is white, its mask (white = fill) and a ground truth."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    world = Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).resize(
        (size * 2, size * 3 // 2), Image.Resampling.BICUBIC
    )
    (folder / "ref").mkdir(parents=True, exist_ok=True)
    (folder / "target").mkdir(exist_ok=True)
    for i in range(n_refs):
        box = (i * size // 8, 0, i * size // 8 + size * 5 // 4, size)  # 5:4, not square
        world.crop(box).save(folder / "ref" / f"{i}.{'jpg' if i % 2 else 'png'}")
    gt = world.crop((size // 2, size // 4, size // 2 + size, size // 4 + size))
    mask = np.zeros((size, size), dtype=np.uint8)
    mask[size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 255
    target = np.asarray(gt).copy()
    target[mask > 0] = 255
    gt.save(folder / "target" / "gt.png")
    Image.fromarray(mask).save(folder / "target" / "mask.png")
    Image.fromarray(target).save(folder / "target" / "target.png")
    return folder


# ---------------------------------------------------------------------------------------------
# The parts, each run in its own process by `run_job`
# ---------------------------------------------------------------------------------------------
def _torch_setup(spec: dict):
    import torch

    ru.quiet_libraries()
    if spec["device"] == "cuda":
        torch.cuda.reset_peak_memory_stats()
    return torch


def _sync(torch, device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def _memory(torch, device: str) -> dict:
    """Peak memory since the last reset: the allocator's (GPU) and the process's resident set."""
    import resource

    out = {"peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3)}
    if device == "cuda":
        free, total = torch.cuda.mem_get_info()
        out |= {
            "peak_allocated_gib": gib(torch.cuda.max_memory_allocated()),
            "peak_reserved_gib": gib(torch.cuda.max_memory_reserved()),
            "peak_reserved_gb": round(torch.cuda.max_memory_reserved() / 1e9, 3),
            "device_used_now_gib": gib(total - free),  # all processes, CUDA context included
        }
    else:
        out |= {"peak_allocated_gib": None, "peak_reserved_gib": None, "peak_reserved_gb": None}
    return out


def job_env(spec: dict) -> dict:
    """Versions, and on a GPU its name, memory, driver, CUDA and cuDNN."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    import torch

    packages = {}
    for name in (
        "torch", "torchvision", "diffusers", "transformers", "accelerate", "peft",
        "bitsandbytes", "xformers", "kornia", "lpips", "timm", "open_clip_torch",
    ):  # fmt: skip
        try:
            packages[name] = version(name)
        except PackageNotFoundError:
            packages[name] = None
    env = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "packages": packages,
        "cuda_available": torch.cuda.is_available(),
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "gpu_name": None,
        "gpu_memory_gib": None,
        "gpu_capability": None,
        "bf16_supported": None,
        "driver": None,
    }
    if spec["device"] == "cuda" and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        env |= {
            "gpu_name": props.name,
            "gpu_memory_gib": gib(props.total_memory),
            "gpu_capability": f"{props.major}.{props.minor}",
            "bf16_supported": torch.cuda.is_bf16_supported(),
        }
        try:
            query = ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]
            env["driver"] = (
                subprocess.run(query, capture_output=True, text=True, timeout=20)
                .stdout.split("\n")[0]
                .strip()
                or None
            )
        except (OSError, subprocess.SubprocessError):
            pass
    return env


def job_build(spec: dict) -> dict:
    """Write the model folder: full-size SD2 inpainting (random weights) or, smoke, the tiny one."""
    import torch

    sys.path.insert(0, str(ROOT / "perf"))
    from make_tiny_model import build_tiny_model, save_sd2_pipeline, write_sd2_tokenizer

    started = time.perf_counter()
    folder = Path(spec["model"])
    if spec["mode"] == "smoke":
        build_tiny_model(folder)
        kind = "tiny random SD2-inpainting-shaped pipeline (make_tiny_model.py)"
    else:
        from bench_train import SD2_TEXT, SD2_UNET, SD2_VAE  # the published configurations
        from diffusers import AutoencoderKL, UNet2DConditionModel
        from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

        write_sd2_tokenizer(folder / "tokenizer")
        tokenizer = CLIPTokenizer.from_pretrained(folder / "tokenizer")
        torch.manual_seed(0)
        unet, vae = UNet2DConditionModel(**SD2_UNET), AutoencoderKL(**SD2_VAE)
        text_encoder = CLIPTextModel(CLIPTextConfig(**SD2_TEXT))
        save_sd2_pipeline(folder, tokenizer, text_encoder, vae, unet)
        kind = "stable-diffusion-2-inpainting architecture, random weights"
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTokenizer

    tokenizer = CLIPTokenizer.from_pretrained(folder / "tokenizer")
    config = UNet2DConditionModel.load_config(folder / "unet")
    return {
        "kind": kind,
        "build_s": round(time.perf_counter() - started, 2),
        "tokenizer_vocab": len(tokenizer),
        "unet_block_out_channels": list(config["block_out_channels"]),
        "folder_gib": gib(sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())),
    }


def job_train(spec: dict, recipe: str, variant: str) -> dict:
    """A few optimizer steps of train_realfill.train; step times, peak memory, the losses."""
    torch = _torch_setup(spec)
    import train_realfill as tr

    config, device = spec[recipe], spec["device"]
    warmup, timed = spec["warmup_steps"], spec["timed_steps"]
    out = Path(spec["work"]) / f"train-{recipe}-{variant}"
    argv = [
        "--pretrained_model_name_or_path", spec["model"], "--train_data_dir", spec["scene"],
        "--output_dir", str(out), "--resolution", str(spec["resolution"]),
        "--train_batch_size", str(config["batch"]),
        "--gradient_accumulation_steps", str(config["accumulation"]),
        "--mixed_precision", config["mixed_precision"],
        "--max_train_steps", str(warmup + timed + 1),  # +1: a step is timed to the next one
        "--checkpointing_steps", "0", "--validation_steps", "0", "--report_to", "none",
    ]  # fmt: skip
    if recipe == "t4":
        argv += ["--use_8bit_adam", "--gradient_checkpointing"]
    else:
        argv += ["--allow_tf32", "--set_grads_to_none"]
    if variant == "xformers":
        argv.append("--enable_xformers_memory_efficient_attention")

    marks, losses, seen = [], [], {}
    original_loss, original_models = tr.training_loss, tr.training_models

    def timed_loss(batch, models, prompt_ids, empty_ids):
        _sync(torch, device)
        marks.append(time.perf_counter())
        loss = original_loss(batch, models, prompt_ids, empty_ids)
        losses.append(loss.detach().float())
        return loss

    def prepared_models(*args, **kwargs):
        models = original_models(*args, **kwargs)
        unet = models["unet"]
        seen["attention"] = sorted({type(p).__name__ for p in unet.attn_processors.values()})
        if variant == "channels_last":
            unet.to(memory_format=torch.channels_last)
        if variant == "compile":
            models["unet"] = torch.compile(unet)
        return models

    tr.training_loss, tr.training_models = timed_loss, prepared_models
    started = time.perf_counter()
    tr.train(tr.parse_args(argv))
    wall = time.perf_counter() - started
    if variant == "xformers" and not any("XFormers" in a for a in seen["attention"]):
        raise RuntimeError(f"xformers requested but the UNet runs {seen['attention']}")
    steps = step_seconds(marks, config["accumulation"])
    timed_steps = steps[warmup:]
    s_per_step = sum(timed_steps) / len(timed_steps)
    loss_values = [float(v) for v in losses]
    return {
        "recipe": {
            "batch": config["batch"],
            "gradient_accumulation_steps": config["accumulation"],
            "effective_batch": config["batch"] * config["accumulation"],
            "mixed_precision": config["mixed_precision"],
            "use_8bit_adam": recipe == "t4",
            "gradient_checkpointing": recipe == "t4",
            "variant": variant,
            "resolution": spec["resolution"],
        },
        "attention_processors": seen["attention"],
        "warmup_steps": warmup,
        "step_seconds": [round(s, 4) for s in steps],
        "timed_steps": len(timed_steps),
        "s_per_step": round(s_per_step, 4),
        f"projected_{PAPER_STEPS}_steps_s": round(s_per_step * PAPER_STEPS, 1),
        f"projected_{PAPER_STEPS}_steps_min": round(s_per_step * PAPER_STEPS / 60, 2),
        "losses_finite": all(v == v and abs(v) != float("inf") for v in loss_values),
        "last_loss": round(loss_values[-1], 5),
        "lora_written": (out / "pytorch_lora_weights.safetensors").is_file(),
        "wall_s": round(wall, 2),
        **_memory(torch, device),
    }


def job_infer(spec: dict) -> dict:
    """infer.run on the model folder: a warm-up, then each (scheduler, steps, batch) run."""
    import gc

    torch = _torch_setup(spec)
    import infer

    scene, device = Path(spec["scene"]), spec["device"]
    base = [
        f"--model_path={spec['model']}", f"--validation_image={scene / 'target' / 'target.png'}",
        f"--validation_mask={scene / 'target' / 'mask.png'}", f"--device={device}",
        f"--mixed_precision={spec['infer_mixed_precision']}", f"--resolution={spec['resolution']}",
    ]  # fmt: skip
    work = Path(spec["work"]) / "infer"

    def run(name, scheduler, steps, num_images, batch):
        out = work / name
        args = base + [
            f"--output_dir={out}", f"--num_images={num_images}", f"--batch_size={batch}",
            f"--scheduler={scheduler}", f"--num_inference_steps={steps}",
        ]  # fmt: skip
        gc.collect()
        if device == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        record = infer.run(infer.parse_args(args))
        written = sorted(p.name for p in out.glob("*.png"))
        return {
            "scheduler": scheduler,
            "steps": steps,
            "num_images": num_images,
            "batch_size": batch,
            "mixed_precision": spec["infer_mixed_precision"],
            "model_size": record["model_size"],
            "files_written": len(written),
            **record["timings"],
            **_memory(torch, device),
        }

    warmup = run("warmup", "dpmsolver++", 2, 1, 1)  # CUDA kernels and autotuning, untimed
    runs = [run(f"{s}-{n}-b{b}", s, n, spec["num_images"], b) for s, n, b in spec["infer_runs"]]
    return {"warmup_generate_s": warmup["generate_s"], "runs": runs}


def job_loftr(spec: dict) -> dict:
    """rank_completions with untrained LoFTR: seconds per (reference, completion) pair."""
    import numpy as np
    from PIL import Image

    torch = _torch_setup(spec)
    import loftr_ranking as lr

    device, config = spec["device"], spec["loftr"]
    scene = Path(spec["scene"])
    references = sorted((scene / "ref").iterdir())[: config["references"]]
    fill_mask = ru.load_mask(scene / "target" / "mask.png")
    target = np.asarray(ru.load_image(scene / "target" / "target.png"))
    folder = Path(spec["work"]) / "loftr"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    candidates = []
    for i in range(config["candidates"] + 1):  # the extra one warms up
        fill = rng.integers(0, 256, target.shape, dtype=np.uint8)
        candidate = np.where(fill_mask[..., None], fill, target)
        candidates.append(folder / f"{i}.png")
        Image.fromarray(candidate.astype(np.uint8)).save(candidates[-1])
    rows = []
    for max_side, dense in config["rows"]:
        warm = lr.LoftrMatcher(lr.RANDOM_WEIGHTS, max_side=max_side, device=device)
        lr.rank_completions(candidates[-1:], references[:1], fill_mask, warm, progress=False)
        matcher = lr.LoftrMatcher(lr.RANDOM_WEIGHTS, max_side=max_side, device=device)
        matcher.model = warm.model  # loaded and warmed up; its feature memo is not shared
        if dense:  # every mutual nearest neighbour is a match: LoFTR's fine stage runs too
            matcher.model.coarse_matching.thr = 0.0
        _sync(torch, device)
        started = time.perf_counter()
        ranking = lr.rank_completions(
            candidates[:-1], references, fill_mask, matcher, progress=False
        )
        _sync(torch, device)
        seconds = time.perf_counter() - started
        pairs = len(references) * (len(candidates) - 1)
        rows.append(
            {
                "max_side": max_side,
                "coarse_threshold": 0.0 if dense else "kornia default",
                "pairs": pairs,
                "seconds": round(seconds, 3),
                "s_per_pair": round(seconds / pairs, 4),
                "pairs_per_s": round(pairs / seconds, 2),
                "completions_per_s": round((len(candidates) - 1) / seconds, 2),
                "errors": sum(c["error"] is not None for c in ranking["candidates"]),
                "matches_counted": sum(c["score"] or 0 for c in ranking["candidates"]),
            }
        )
    return {"weights": "untrained (pretrained=None), timing only", "rows": rows}


def job_metrics(spec: dict) -> dict:
    """The benchmark/ scorers of LPIPS, DINO and CLIP, given random weights saved to files."""
    import numpy as np

    torch = _torch_setup(spec)
    from benchmark import clip_metric, dino, lpips_metric
    from benchmark.common import ItemLoader

    device = spec["device"]
    folder = Path(spec["work"]) / "metrics"
    folder.mkdir(parents=True, exist_ok=True)
    scene = Path(spec["scene"])
    gt = scene / "target" / "gt.png"
    from PIL import Image

    rng = np.random.default_rng(2)
    shape = np.asarray(Image.open(gt)).shape
    loader, items = ItemLoader(), []
    for i in range(spec["metric_items"] + 1):  # the extra one warms up
        path = folder / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(path)
        job = {"id": str(i), "gt": str(gt), "mask": str(scene / "target" / "mask.png")}
        items.append(loader.load(job | {"result": str(path)}))

    def random_weights(name: str) -> str:
        """A random state dict in the file format the scorer reads (pretrained=None)."""
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if name == "LPIPS":
                from torchvision.models import alexnet

                state = alexnet(weights=None).state_dict()
            elif name == "DINO":
                import timm

                state = timm.create_model(
                    "vit_small_patch16_224", pretrained=False, num_classes=0
                ).state_dict()
            else:
                import open_clip

                state = open_clip.create_model(
                    clip_metric.SPEC.params["model"], pretrained=None
                ).state_dict()
        path = folder / f"{name}.pt"
        torch.save(state, path)
        return str(path)

    results = {}
    for name, module in (("LPIPS", lpips_metric), ("DINO", dino), ("CLIP", clip_metric)):
        try:
            torch.manual_seed(0)
            scorer = module.build(argparse.Namespace(weights=random_weights(name), device=device))
            scorer(items[-1])  # warm-up (and, for DINO / CLIP, the ground truth's embedding)
            _sync(torch, device)
            started = time.perf_counter()
            values = [float(scorer(item)) for item in items[:-1]]  # float() waits for the GPU
            seconds = time.perf_counter() - started
            n = len(values)
            results[name] = {
                "status": "ok",
                "items": n,
                "image_size": list(shape[1::-1]),
                "s_per_pair": round(seconds / n, 5),
                "images_per_s": round(n / seconds, 2),
                "values_finite": all(np.isfinite(values)),
                "mean_value": round(float(np.mean(values)), 5),
            }
        except Exception as err:  # one metric's failure must not hide the others' figures
            results[name] = {"status": "error", "error": describe(err)}
    return {"weights": "random (lpips pnet_rand, timm / open_clip pretrained=None)", **results}


def run_child(name: str, spec_file: Path, result_file: Path) -> None:
    """Entry of a part's own process: run it, write its result (or its error) as JSON."""
    import traceback

    spec = json.loads(Path(spec_file).read_text())
    jobs = {
        "env": job_env,
        "build": job_build,
        "infer": job_infer,
        "loftr": job_loftr,
        "metrics": job_metrics,
        "train_t4": lambda s: job_train(s, "t4", "sdpa"),
        **{f"train_paper_{v}": (lambda s, v=v: job_train(s, "paper", v)) for v in VARIANTS},
    }
    try:
        if name not in jobs:
            raise KeyError(f"unknown part '{name}': one of {', '.join(jobs)}")
        result = {"status": "ok"} | jobs[name](spec)
    except BaseException as err:
        traceback.print_exc()
        result = {"status": "error", "error": describe(err)}
    Path(result_file).write_text(json.dumps(result, indent=2, default=str))


def run_job(name: str, spec: dict, timeout: float) -> dict:
    """Run part `name` in a fresh process; its result, or why there is none."""
    work = Path(spec["work"])
    spec_file, result_file = work / f"{name}.spec.json", work / f"{name}.result.json"
    spec_file.write_text(json.dumps(spec))
    result_file.unlink(missing_ok=True)
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1")
    cmd = [sys.executable, __file__, "--_job", name, str(spec_file), str(result_file)]
    started = time.perf_counter()
    log = work / f"{name}.log"
    timed_out = False
    with open(log, "w") as stream:
        proc = subprocess.Popen(cmd, stdout=stream, stderr=subprocess.STDOUT, env=env)
        try:
            proc.wait(timeout=max(1.0, timeout))
        except subprocess.TimeoutExpired:
            timed_out = True
            proc.kill()
            proc.wait()
        except KeyboardInterrupt:
            proc.kill()
            proc.wait()
            raise
    wall = round(time.perf_counter() - started, 2)
    if result_file.is_file():
        result = json.loads(result_file.read_text())
    elif timed_out:
        result = {"status": "timeout", "error": f"stopped after {timeout:.0f} s"}
    else:  # e.g. -9: killed from outside, often for lack of host memory
        result = {"status": "error", "error": f"the process exited with {proc.returncode}"}
    if result["status"] != "ok":
        result["log_tail"] = log.read_text(errors="replace")[-2000:]
    return {"process_wall_s": wall} | result


# ---------------------------------------------------------------------------------------------
# The run: parts in order of importance, within a time budget; then the report
# ---------------------------------------------------------------------------------------------
def plan(variants: list[str]) -> list[str]:
    """Parts in the order they run: the goals' parts first, optional variants last."""
    first = ["env", "build", "train_t4"] + (["train_paper_sdpa"] if "sdpa" in variants else [])
    rest = [f"train_paper_{v}" for v in variants if v != "sdpa"]
    return first + ["infer", "loftr", "metrics"] + rest


def timeout_for(name: str, spec: dict) -> float:
    limits = spec["timeouts"]
    if name.startswith("train"):
        return limits["train"]
    return limits.get(name, limits["other"])


def run_all(smoke: bool, variants: list[str], budget_s: float, warmup: int, timed: int) -> dict:
    spec = settings(smoke) | {"warmup_steps": warmup, "timed_steps": timed}
    started = time.perf_counter()
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="gpu_kit-") as work:
        work = Path(work)
        spec |= {"work": str(work), "model": str(work / "model")}
        spec["scene"] = str(write_scene(work / "scene", spec["resolution"]))

        def part(name: str) -> dict:
            left = budget_s - (time.perf_counter() - started)
            needs_model = name.startswith("train") or name == "infer"
            if needs_model and results.get("build", {}).get("status") != "ok":
                return {"status": "skipped", "error": "the model folder was not built"}
            if name == "train_paper_xformers" and not xformers_usable(spec, results):
                return {
                    "status": "skipped",
                    "error": "xformers needs a CUDA GPU and the xformers package "
                    f"(installed: {results.get('env', {}).get('packages', {}).get('xformers')})",
                }
            if left < 10:
                return {"status": "skipped", "error": f"time budget {budget_s} s spent"}
            print(f"[{time.perf_counter() - started:6.1f} s] {name} ...", flush=True)
            result = run_job(name, spec, min(timeout_for(name, spec), left))
            print(f"  {name}: {result['status']} ({result['process_wall_s']} s)", flush=True)
            return result

        names = plan(variants)
        if smoke:  # the smoke mode's parts are mostly process start-up: two at a time
            for stage in (names[:2], names[2:]):  # env and build first: the rest needs them
                with ThreadPoolExecutor(max_workers=2) as pool:
                    results |= dict(zip(stage, pool.map(part, stage), strict=True))
        else:  # one at a time, in this thread: each part's memory and time are its own, and
            for name in names:  # Ctrl-C reaches run_job, which stops the part's process
                results[name] = part(name)
    env = results.pop("env")
    return {
        "schema_version": SCHEMA_VERSION,
        "mode": spec["mode"],
        "device": spec["device"],
        "settings": {k: v for k, v in spec.items() if k not in ("work", "model", "scene")},
        "environment": env,
        "total_s": round(time.perf_counter() - started, 1),
        "parts": group_parts(results),
    }


def xformers_usable(spec: dict, results: dict) -> bool:
    env = results.get("env", {})
    return spec["device"] == "cuda" and bool(env.get("packages", {}).get("xformers"))


def group_parts(results: dict) -> dict:
    """{build, train_t4, train_paper: {variant: ...}, infer, loftr, metrics}."""
    parts = {k: v for k, v in results.items() if not k.startswith("train_paper_")}
    parts["train_paper"] = {
        k.removeprefix("train_paper_"): v
        for k, v in results.items()
        if k.startswith("train_paper_")
    }
    return parts


def goals(report: dict) -> list[dict]:
    """The issue's goals against the figures; `met` is None when not measured on a GPU."""
    parts, on_gpu = report["parts"], report["mode"] == "gpu"
    t4 = parts.get("train_t4", {})
    paper = {k: v for k, v in parts.get("train_paper", {}).items() if v.get("status") == "ok"}
    best = min(paper.items(), key=lambda kv: kv[1]["s_per_step"], default=(None, None))
    runs = parts.get("infer", {}).get("runs", [])
    fast = next((r for r in runs if r["scheduler"] == "dpmsolver++" and r["steps"] == 25), None)

    def row(goal, limit, measured, unit):
        met = None if (not on_gpu or measured is None) else measured <= limit
        return {"goal": goal, "limit": limit, "unit": unit, "measured": measured, "met": met}

    return [
        row(
            "T4 recipe, 512 px: peak reserved GPU memory",
            T4_PEAK_GOAL_GB,
            t4.get("peak_reserved_gb"),
            "GB",
        ),
        row(
            f"paper recipe: {PAPER_STEPS} steps (fastest variant: {best[0]})",
            PAPER_2000_STEPS_GOAL_S,
            best[1] and best[1][f"projected_{PAPER_STEPS}_steps_s"],
            "s",
        ),
        row(
            "16 completions, 512 px, DPM-Solver++ 25 (batch 16)",
            INFER_16_GOAL_S,
            fast and fast["generate_s"] if fast and fast["num_images"] == 16 else None,
            "s",
        ),
    ]


def markdown(report: dict, command: str) -> str:
    env, parts = report["environment"], report["parts"]
    pk = env.get("packages", {})
    lines = [
        f"# GPU kit: {env.get('gpu_name') or 'CPU smoke run'}",
        "",
        f"`{command}` ({report['mode']} mode, {report['total_s']} s in all)",
        "",
        f"GPU {env.get('gpu_name')} ({env.get('gpu_memory_gib')} GiB, compute "
        f"{env.get('gpu_capability')}), driver {env.get('driver')}, CUDA {env.get('torch_cuda')}, "
        f"cuDNN {env.get('cudnn')}; torch {pk.get('torch')}, diffusers {pk.get('diffusers')}, "
        f"transformers {pk.get('transformers')}, bitsandbytes {pk.get('bitsandbytes')}, "
        f"xformers {pk.get('xformers')}.",
    ]
    if report["mode"] != "gpu":
        lines += ["", "**Smoke run: tiny model, CPU. These timings are not GPU figures.**"]
    judged = {True: "yes", False: "**no**", None: "not judged: no GPU figure"}
    rows = [
        [g["goal"], f"{g['limit']} {g['unit']}", g["measured"], judged[g["met"]]]
        for g in report["goals"]
    ]
    lines += table("Goals", ["goal", "limit", "measured", "met"], rows)
    trains = [("T4", parts.get("train_t4", {}))] + [
        (f"paper, {k}", v) for k, v in parts.get("train_paper", {}).items()
    ]
    rows = []
    for label, r in trains:
        rc = r.get("recipe", {})
        rows.append(
            [label, f"{rc.get('batch')} x {rc.get('gradient_accumulation_steps')}"]
            + [rc.get("mixed_precision"), ", ".join(r.get("attention_processors", []))]
            + [r.get("s_per_step"), r.get(f"projected_{PAPER_STEPS}_steps_min")]
            + [r.get("peak_allocated_gib"), r.get("peak_reserved_gib"), status(r)]
        )
    head = ["recipe", "batch x accum", "precision", "attention", "s/step", "2,000 steps (min)"]
    head += ["peak alloc (GiB)", "peak reserved (GiB)", "status"]
    lines += table("Training (train_realfill.train)", head, rows)
    infer = parts.get("infer", {})
    keys = ["scheduler", "steps", "num_images", "batch_size", "mixed_precision", "generate_s"]
    keys += ["per_image_s", "peak_allocated_gib"]
    head = ["sampler", "steps", "images", "batch", "precision", "generate (s)", "s/image"]
    head += ["peak alloc (GiB)"]
    rows = [[r[k] for k in keys] for r in infer.get("runs", [])]
    lines += table(f"Inference (infer.run): {status(infer)}", head, rows)
    loftr = parts.get("loftr", {})
    keys = ["max_side", "coarse_threshold", "pairs", "s_per_pair", "pairs_per_s"]
    keys += ["completions_per_s"]
    head = ["max side", "coarse threshold", "pairs", "s/pair", "pairs/s", "completions/s"]
    rows = [[r[k] for k in keys] for r in loftr.get("rows", [])]
    lines += table(f"LoFTR ranking (untrained weights): {status(loftr)}", head, rows)
    metrics = parts.get("metrics", {})
    rows = []
    for name in ("LPIPS", "DINO", "CLIP"):
        r = metrics.get(name, {})
        rows.append([name, r.get("items"), r.get("s_per_pair"), r.get("images_per_s"), status(r)])
    head = ["metric", "items", "s/pair", "images/s", "status"]
    lines += table(f"Learned metrics (random weights): {status(metrics)}", head, rows)
    build = parts.get("build", {})
    lines += [
        "",
        f"Model: {build.get('kind')}, built in {build.get('build_s')} s: {status(build)}.",
    ]
    failed = [(k, v) for k, v in flat_parts(parts) if v.get("status") not in (None, "ok")]
    if failed:
        lines += ["", "## Not measured", ""]
        lines += [f"- {k}: {v['status']}: {v.get('error')}" for k, v in failed]
    return "\n".join(lines) + "\n"


def table(title: str, head: list[str], rows: list[list]) -> list[str]:
    """Markdown lines of a section: its title, then a table with one row per `rows` entry."""
    lines = ["", f"## {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def status(part: dict) -> str:
    s = part.get("status", "not run")
    return s if s == "ok" else f"{s}: {part.get('error', '')}"[:200]


def flat_parts(parts: dict):
    for key, value in parts.items():
        if key == "train_paper":
            yield from ((f"train_paper_{k}", v) for k, v in value.items())
        else:
            yield key, value
            if key == "metrics":
                yield from ((f"metrics {k}", v) for k, v in value.items() if isinstance(v, dict))


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--_job":
        run_child(sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=ru.HelpFormatter,
    )
    parser.add_argument(
        "--smoke", action="store_true", help="tiny model, 64 px, CPU: checks every code path"
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help="results JSON (the .md goes beside it); default perf/results/gpu_<gpu-name>.json, "
        "required with --smoke",
    )
    parser.add_argument(
        "--variants",
        nargs="+",
        choices=VARIANTS,
        default=list(DEFAULT_VARIANTS),
        help="paper-recipe runs; compile adds minutes of compilation",
    )
    parser.add_argument("--warmup_steps", type=int, default=None, help="default: 2 (smoke: 1)")
    parser.add_argument("--timed_steps", type=int, default=None, help="default: 5 (smoke: 1)")
    parser.add_argument(
        "--budget_s", type=float, default=None, help="whole-run limit; default 450 (smoke: 900)"
    )
    args = parser.parse_args()
    if args.smoke and args.output is None:
        parser.error("--smoke needs --output: smoke figures are not GPU results")
    if not args.smoke:
        import torch

        if not torch.cuda.is_available():
            parser.error("no CUDA GPU is visible: on a CPU run --smoke --output PATH")
    warmup = args.warmup_steps if args.warmup_steps is not None else (1 if args.smoke else 2)
    timed = args.timed_steps if args.timed_steps is not None else (1 if args.smoke else 5)
    if warmup < 0 or timed < 1:
        parser.error("--warmup_steps must be at least 0 and --timed_steps at least 1")
    budget = args.budget_s or (900 if args.smoke else BUDGET_S)
    try:
        report = run_all(args.smoke, args.variants, budget, warmup, timed)
    except KeyboardInterrupt:
        print("interrupted: no results written", file=sys.stderr)
        sys.exit(ru.EXIT_INTERRUPTED)
    report["goals"] = goals(report)
    command = "python perf/gpu_kit.py " + " ".join(sys.argv[1:])
    report["command"] = command.strip()
    output = args.output or RESULTS / f"gpu_{slug(report['environment'].get('gpu_name') or '')}"
    output = Path(output).with_suffix(".json")
    atomic_write_json(report, output)
    with atomic_path(output.with_suffix(".md")) as tmp:
        tmp.write_text(markdown(report, report["command"]))
    print(f"results: {output} and {output.with_suffix('.md').name} ({report['total_s']} s)")


if __name__ == "__main__":
    main()
