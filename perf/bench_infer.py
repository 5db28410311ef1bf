"""Wall time and peak memory of 16 completions on the tiny model, three ways, side by side:

1. earlier: the earlier public implementation's behaviour, rewritten here: 16 sequential
   pipeline calls sharing one generator, DDPM, the target squashed to a square, a dilated mask;
2. ours: infer.py at identical settings (DDPM, same steps), batched, one generator per image;
3. fast: infer.py with a faster sampler (DPM-Solver++, 25 steps by default).

Each configuration runs in its own child process (its peak RSS is its own; it pays its own
imports), one after the other. Results go to perf/results/infer_<device>_<size>px_<steps>steps
.json and .md.

The tiny model's VAE downsamples by 8, as SD2's: at 512 px its latents are 64x64, as SD2's.
`--size 128 --steps 40` is a quicker check.

    python perf/bench_infer.py                      # 512 px: DDPM 200 vs 200 vs DPM++ 25
    python perf/bench_infer.py --size 64 --steps 8 --fast_steps 2   # quick check
    python perf/bench_infer.py --device cuda        # 512 px, the batching gain on a GPU
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import infer  # noqa: E402
import realfill_utils as ru  # noqa: E402

CONFIGS = ("earlier", "ours", "fast")
RESULTS = ROOT / "perf" / "results"
SPEEDUP_GOAL = 6.0  # the goal for the fast path against the earlier implementation


def write_scene(folder: Path, size: int) -> tuple[Path, Path]:
    """A size x size target with a centred hole (white) and its mask."""
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, size=(max(2, size // 16), max(2, size // 16), 3), dtype=np.uint8)
    target = np.asarray(Image.fromarray(small).resize((size, size), Image.Resampling.BICUBIC))
    mask = np.zeros((size, size), dtype=np.uint8)
    mask[size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 255
    target = target.copy()
    target[mask > 0] = 255
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(target).save(folder / "target.png")
    Image.fromarray(mask).save(folder / "mask.png")
    return folder / "target.png", folder / "mask.png"


def run_earlier(spec: dict) -> dict:
    """The earlier implementation's inference loop: 16 calls, one shared generator."""
    import torch
    from diffusers import DDPMScheduler, StableDiffusionInpaintPipeline
    from PIL import ImageFilter

    ru.quiet_libraries()
    pipe = StableDiffusionInpaintPipeline.from_pretrained(
        spec["model"], safety_checker=None, requires_safety_checker=False
    )
    pipe.scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    pipe.to(spec["device"])
    pipe.set_progress_bar_config(disable=True)
    generator = torch.Generator(spec["device"]).manual_seed(0)  # shared by all 16
    size = (spec["size"], spec["size"])  # squashed to a square, never restored
    image = Image.open(spec["target"]).convert("RGB").resize(size)
    mask = Image.open(spec["mask"]).convert("L").resize(size).filter(ImageFilter.MaxFilter(3))
    blend = mask.filter(ImageFilter.BoxBlur(1))
    # From here on, as infer.py's generate_s: sample, composite, write.
    loaded, loaded_cpu = time.perf_counter(), time.process_time()
    out = Path(spec["out"])
    for i in range(spec["num_images"]):
        result = pipe(
            prompt=ru.PROMPT,
            image=image,
            mask_image=mask,
            height=size[1],
            width=size[0],
            num_inference_steps=spec["steps"],
            guidance_scale=1.0,
            generator=generator,
        ).images[0]
        Image.composite(result, image, blend).save(out / f"{i}.png")
    return {
        "generate_s": time.perf_counter() - loaded,
        "generate_cpu_s": time.process_time() - loaded_cpu,
    }


def run_ours(spec: dict, scheduler: str, steps: int) -> dict:
    args = infer.parse_args(
        [
            f"--model_path={spec['model']}",
            f"--validation_image={spec['target']}",
            f"--validation_mask={spec['mask']}",
            f"--output_dir={spec['out']}",
            f"--num_images={spec['num_images']}",
            f"--batch_size={spec['batch_size']}",
            f"--scheduler={scheduler}",
            f"--num_inference_steps={steps}",
            f"--resolution={spec['size']}",
            f"--device={spec['device']}",
        ]
    )
    timings = infer.run(args)["timings"]
    return {key: timings[key] for key in ("generate_s", "generate_cpu_s")}


def child(config: str, spec: dict) -> dict:
    """Run one configuration in this process; its generation time and peak memory."""
    if config == "earlier":
        result = run_earlier(spec)
    elif config == "ours":
        result = run_ours(spec, "ddpm", spec["steps"])
    else:
        result = run_ours(spec, spec["fast_scheduler"], spec["fast_steps"])
    result["per_image_s"] = result["generate_s"] / spec["num_images"]
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if spec["device"].startswith("cuda"):
        import torch

        result["peak_cuda_mib"] = torch.cuda.max_memory_allocated() / 2**20
    return {k: round(v, 3) for k, v in result.items()}


def spawn(config: str, spec: dict, work: Path) -> dict:
    """Run `config` in a fresh Python process; total_s is its whole wall time (interpreter
    start, imports, model load, generation, writes), load_s = total_s - generate_s."""
    out = work / f"out-{config}"
    out.mkdir(exist_ok=True)
    spec = dict(spec, out=str(out))
    spec_file, result_file = work / f"{config}-spec.json", work / f"{config}-result.json"
    spec_file.write_text(json.dumps(spec))
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    cmd = [sys.executable, __file__, "--_child", config, str(spec_file), str(result_file)]
    started = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    total = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{config}: child process failed:\n{proc.stderr[-3000:]}")
    result = json.loads(result_file.read_text())
    result["total_s"] = round(total, 3)
    result["load_s"] = round(total - result["generate_s"], 3)
    return result


def markdown(report: dict) -> str:
    s = report["settings"]
    names = {
        "earlier": f"earlier: {s['num_images']} sequential calls, ddpm {s['steps']}",
        "ours": f"infer.py batch {s['batch_size']}, ddpm {s['steps']}",
        "fast": f"infer.py batch {s['batch_size']}, {s['fast_scheduler']} {s['fast_steps']}",
    }
    lines = [
        f"{s['num_images']} completions, tiny model, {s['size']}x{s['size']}, "
        f"device {s['device']} ({report['machine']['cpu_count']} CPUs), "
        f"`{report['command']}`",
        "",
        "| configuration | total s | of which load s | generate s | generate CPU s | s/image "
        "| speed-up (generate) | speed-up (generate CPU) | speed-up (total) | peak RSS MiB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in CONFIGS:
        r, ratio = report["results"][name], report["speedup_vs_earlier"][name]
        lines.append(
            f"| {names[name]} | {r['total_s']:.1f} | {r['load_s']:.1f} | {r['generate_s']:.1f} | "
            f"{r['generate_cpu_s']:.1f} | {r['per_image_s']:.2f} | {ratio['generate']:.2f}x | "
            f"{ratio['generate_cpu']:.2f}x | {ratio['total']:.2f}x | {r['peak_rss_mib']:.0f} |"
        )
    goals = report["goals"]
    lines += [
        "",
        f"Goals (on generate wall time): ours no slower than earlier: "
        f"**{goals['ours_not_slower']}**; fast path at least {SPEEDUP_GOAL:g}x faster: "
        f"**{goals['fast_at_least_6x']}**. CPU seconds (all threads) are less disturbed by "
        "other work on a shared machine than wall time.",
    ]
    return "\n".join(lines) + "\n"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=ru.HelpFormatter)
    p.add_argument("--size", type=int, default=512, help="target side in px (square)")
    p.add_argument(
        "--steps",
        type=int,
        default=ru.NUM_INFERENCE_STEPS,
        help="DDPM steps of configurations 1 and 2",
    )
    p.add_argument(
        "--fast_scheduler", default="dpmsolver++", choices=list(ru.SCHEDULERS), help="fast path"
    )
    p.add_argument("--fast_steps", type=int, default=25, help="steps of the fast path")
    p.add_argument("--num_images", type=int, default=ru.NUM_IMAGES, help="completions per run")
    p.add_argument(
        "--batch_size", type=int, default=infer.BATCH_SIZE, help="of configurations 2 and 3"
    )
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--output", type=Path, default=None, help="results stem (default: by settings)")
    p.add_argument("--_child", nargs=3, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args._child:
        config, spec_file, result_file = args._child
        spec = json.loads(Path(spec_file).read_text())
        Path(result_file).write_text(json.dumps(child(config, spec)))
        return
    stem = args.output or RESULTS / f"infer_{args.device}_{args.size}px_{args.steps}steps"
    with tempfile.TemporaryDirectory(prefix="bench-infer-") as tmp:
        work = Path(tmp)
        from make_tiny_model import build_tiny_model

        model = build_tiny_model(work / "tiny-sd2-inpainting")
        target, mask = write_scene(work / "scene", args.size)
        spec = {
            "model": str(model),
            "target": str(target),
            "mask": str(mask),
            "size": args.size,
            "steps": args.steps,
            "fast_scheduler": args.fast_scheduler,
            "fast_steps": args.fast_steps,
            "num_images": args.num_images,
            "batch_size": args.batch_size,
            "device": args.device,
        }
        results = {}
        for config in CONFIGS:
            print(f"{config} ...", flush=True)
            results[config] = spawn(config, spec, work)
            print(f"{config}: {json.dumps(results[config])}", flush=True)
    import diffusers
    import torch

    base = results["earlier"]
    speedup = {
        name: {
            key: round(base[f"{key}_s"] / r[f"{key}_s"], 3)
            for key in ("generate", "generate_cpu", "total")
        }
        for name, r in results.items()
    }
    report = {
        "command": "python perf/bench_infer.py " + " ".join(argv or sys.argv[1:]),
        "settings": {k: v for k, v in spec.items() if k not in ("model", "target", "mask")},
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "torch": torch.__version__,
            "diffusers": diffusers.__version__,
            "torch_threads": torch.get_num_threads(),
        },
        "results": results,
        "speedup_vs_earlier": speedup,
        "goals": {
            "ours_not_slower": speedup["ours"]["generate"] >= 1.0,
            "fast_at_least_6x": speedup["fast"]["generate"] >= SPEEDUP_GOAL,
        },
        "notes": "total = process start to last file written (imports, model load, generation, "
        "compositing, PNG writes); generate = sampling + compositing + writes; generate_cpu = "
        "the CPU seconds (all threads) of generate. Peak RSS is the child process's ru_maxrss. "
        "Quality of the fast sampler is not measured here.",
    }
    stem.parent.mkdir(parents=True, exist_ok=True)
    ru.atomic_write_json(report, stem.with_suffix(".json"))
    with ru.atomic_path(stem.with_suffix(".md")) as tmp:
        tmp.write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
