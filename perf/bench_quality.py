"""Quality gate: does RealFill fine-tuning improve on the base model, on every example scene,
and how does it stand against simple fills?

Per example scene (data/Custom/*), through the project's own scripts:
  - untuned:  infer.py straight from the base model (no fine-tuning);
  - RealFill: refill.py round 1 (train_realfill.py on the scene, then infer.py), with the base
    model's recommended fine-tuning settings (its realfill_recipe.json, if it has one);
  - ReFill:   refill.py round 2 (the best round-1 completions added to the references);
  - samplers: the round-1 model sampled again with DPM-Solver++ at 25 and 50 steps, timed
    against the paper's DDPM 200 (completions.json records each run's generation time).
Then benchmarks.py scores all of them (masked PSNR and SSIM against gt.png) with seed
selection at 0/25/50/75% drop (SIFT ranking). In the same table, scored with the same
functions: a mean-colour fill, OpenCV Telea, the best reference warped by a SIFT + RANSAC
homography (with and without a colour fit), and two ceilings (the ground truth through the
model's resolution, and through its VAE too).

    python perf/bench_quality.py                      # about 25 minutes on 2 CPU cores
    python perf/bench_quality.py --scenes 1 --max_train_steps 20 --name smoke
Results: perf/results/<name>.md and .json (default name: quality_gate).
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import infer  # noqa: E402
import realfill_utils as ru  # noqa: E402
import scene_engine as engine  # noqa: E402
from benchmark.suite import DROP_RATES, RANKING_FILE, seed_selection  # noqa: E402

MIN_PRIOR_COVERAGE = infer.MIN_PRIOR_COVERAGE  # infer.py samples from the prior only above it
GOAL_PSNR_GAIN = 3.0  # dB of masked PSNR that RealFill must add over the un-tuned base
METRICS = ("PSNR", "SSIM")  # the learned metrics need weights this machine cannot download
SAMPLERS = {  # variant suffix -> (scheduler, steps); "" is round 1 itself (the paper's DDPM 200)
    "": ("ddpm", 200),
    "dpmpp25": ("dpmsolver++", 25),
    "dpmpp50": ("dpmsolver++", 50),
}


TIMINGS_FILE = "timings.json"  # next to the logs: each step's seconds, for a resumed run


def run(cmd: list, log: Path, may_fail: bool = False, done: Path | None = None) -> float | None:
    """Run one project script from the repository root (scene_engine.run_script), its output
    to `log`; return its wall time; stop on failure (unless `may_fail`: then the time is
    returned and the caller checks what was written). If `done` exists, the step finished in
    an earlier run and is skipped: its time is the one recorded then (TIMINGS_FILE), or None."""
    timings_file = log.parent / TIMINGS_FILE
    recorded = json.loads(timings_file.read_text()) if timings_file.is_file() else {}
    if done is not None and done.is_file():
        return recorded.get(log.name)
    start = time.perf_counter()
    try:
        engine.run_script(cmd, log, cwd=ROOT)
    except engine.StageFailed as err:
        if not may_fail:
            sys.exit(f"failed: {shlex.join(map(str, cmd))}\n{err}")
    seconds = time.perf_counter() - start
    ru.atomic_write_json(recorded | {log.name: round(seconds, 3)}, timings_file)
    return seconds


def scene_runs(scene: Path, args, out: Path) -> dict:
    """Every result folder of one scene; returns {variant: completions.json record}."""
    name = f"{scene.parent.name}-{scene.name}"
    work = out / name
    common = [
        "--resolution", args.resolution, "--num_images", args.num_images,
    ]  # fmt: skip
    train_args = ["--report_to", "none", "--validation_steps", "0", *ru.recipe_flags(args.recipe)]
    if args.refill_scenes is not None and scene.name not in args.refill_scenes:
        return round_one_only(scene, args, out, name, train_args)
    print(f"== {name}: RealFill and ReFill (refill.py)", flush=True)
    seconds = run([
        "refill.py", "--train_data_dir", scene, "--output_dir", work,
        "--pretrained_model_name_or_path", args.base_model, *common,
        "--max_train_steps", args.max_train_steps, "--train_batch_size", 16,
        "--scheduler", "ddpm", "--num_inference_steps", 200, "--matcher", "sift",
        "--train_args", shlex.join(train_args),
    ], out / "logs" / f"{name}-refill.log", may_fail=True)  # fmt: skip
    # The time refill.py recorded for its stages when they ran (a resumed run skips them).
    state = json.loads((work / "refill_state.json").read_text())["stages"]
    seconds = sum(stage.get("seconds", 0.0) for stage in state.values())
    return finish_scene(scene, args, out, name, seconds, refill_ran=True)


def round_one_only(scene: Path, args, out: Path, name: str, train_args: list) -> dict:
    """RealFill without the ReFill round (--refill_scenes): train_realfill.py and infer.py into
    the layout refill.py writes, then the same variants as a full scene."""
    work = out / name
    model = work / "models" / f"{name}-model"
    print(f"== {name}: RealFill (train_realfill.py, infer.py; no ReFill round)", flush=True)
    train_seconds = run([
        "train_realfill.py", "--pretrained_model_name_or_path", args.base_model,
        "--train_data_dir", scene, "--output_dir", model, "--resolution", args.resolution,
        "--max_train_steps", args.max_train_steps, "--train_batch_size", 16,
        "--resume_from_checkpoint", "latest", *train_args,
    ], out / "logs" / f"{name}-train.log", done=model / ru.SETTINGS_FILE)  # fmt: skip
    results = work / "results" / f"{name}-results"
    run([
        "infer.py", "--model_path", model, "--output_dir", results,
        "--validation_image", scene / "target" / "target.png",
        "--validation_mask", scene / "target" / "mask.png",
        "--resolution", args.resolution, "--num_images", args.num_images,
        "--scheduler", "ddpm", "--num_inference_steps", 200,
    ], out / "logs" / f"{name}-infer.log", done=results / "completions.json")  # fmt: skip
    infer_seconds = json.loads((results / "completions.json").read_text())["timings"]["total_s"]
    seconds = None if train_seconds is None else train_seconds + infer_seconds
    return finish_scene(scene, args, out, name, seconds, refill_ran=False)


def finish_scene(scene: Path, args, out: Path, name: str, seconds: float, refill_ran: bool):
    """Link round 1 and ReFill into results/, then the warp fill and the other variants."""
    work = out / name
    results = out / "results"
    common = ["--resolution", args.resolution, "--num_images", args.num_images]
    records = {}
    round_one = work / "results" / f"{name}-results"
    if not (round_one / "completions.json").is_file():
        sys.exit(f"{name}: refill.py wrote no round-1 completions; see {out / 'logs'}")
    round_two = work / "results" / f"{name}-results-refill"
    refill_note = None
    if not refill_ran:
        refill_note = "not run on this scene (--refill_scenes)"
        round_two = round_one
    elif not (round_two / "completions.json").is_file():
        # ReFill stops when no completion has a correspondence with the references (nothing
        # new to learn from): what the user keeps is round 1, and the table says so
        refill_note = (out / "logs" / f"{name}-refill.log").read_text().strip().splitlines()[-2]
        if "correspondence" not in refill_note:
            sys.exit(f"{name}: refill.py failed; see {out / 'logs' / f'{name}-refill.log'}")
        round_two = round_one
    for variant, folder, source in (
        ("", f"{name}-results", round_one),
        ("refill", f"{name}-results-refill", round_two),
    ):
        link = results / folder
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.is_symlink():
            link.symlink_to(source, target_is_directory=True)
        records[variant] = json.loads((link / "completions.json").read_text())
    records[""]["refill_note"] = refill_note
    records[""]["refill_seconds"] = seconds  # both rounds: train, infer, rank, train, infer
    target = scene / "target"
    warp = out / "warp" / f"{name}-results-warp"
    print(f"== {name}: warp fill (warp_fill.py)", flush=True)
    records[""]["warp_seconds"] = run(
        ["warp_fill.py", "--scene_dir", scene, "--output_dir", warp],
        out / "logs" / f"{name}-warp.log",
    )
    jobs = {"untuned": (args.base_model, "ddpm", 200, [])}
    model = work / "models" / f"{name}-model"
    for variant, (scheduler, steps) in SAMPLERS.items():
        if variant:
            jobs[variant] = (model, scheduler, steps, [])
    # Geometry-guided RealFill: infer.py starts from the warp fill only where the references
    # cover at least MIN_PRIOR_COVERAGE of the hole (else from noise, as RealFill does), and
    # weighs the fill against the completions where it has an estimate.
    covered = json.loads((warp / "warp_fill.json").read_text())["hole_covered_by_references"]
    records[""]["hole_covered_by_references"] = covered
    prior = ["--prior_image", warp / "0.png", "--strength", args.strength]
    prior += ["--prior_uncertainty", warp / "uncertainty.png"]
    jobs["geo"] = (model, "ddpm", 200, prior)
    for variant, (model_path, scheduler, steps, extra) in jobs.items():
        print(f"== {name}: {variant} ({scheduler}, {steps} steps)", flush=True)
        folder = results / f"{name}-results-{variant}"
        done = folder / "completions.json"
        if done.is_file():  # a finished run with the same settings is reused (resumable bench)
            record = json.loads(done.read_text())
            same = (record["scheduler"], record["num_inference_steps"], len(record["images"]))
            if same == (scheduler, steps, args.num_images):
                records[variant] = record
                continue
        run([
            "infer.py", "--model_path", model_path, "--output_dir", folder,
            "--validation_image", target / "target.png",
            "--validation_mask", target / "mask.png", *common,
            "--scheduler", scheduler, "--num_inference_steps", steps, *extra,
        ], out / "logs" / f"{name}-{variant}.log")  # fmt: skip
        records[variant] = json.loads((folder / "completions.json").read_text())
    return records


def score(out: Path, args) -> dict:
    """benchmarks.py over every folder; returns {(scene, variant): {metric: {drop: mean}}}."""
    print("== benchmarks.py", flush=True)
    report = out / "report.txt"
    run([
        "benchmarks.py", "--results_base_dir", out / "results",
        "--custom_dataset_dir", ROOT / "data", "--cache_dir", out / "cache",
        "--output_file", report, "--metrics", *METRICS, "--ranking_matcher", "sift",
        "--num_images", args.num_images,
    ], out / "logs" / "benchmarks.log")  # fmt: skip
    rows = json.loads((out / "report_scores.json").read_text())["scores"]
    by_folder: dict = {}
    for row in rows:
        variant = "" if row["variant"] == "base" else row["variant"]  # the report's name for ""
        key = (f"{row['dataset']}-{row['scene']}", variant)
        by_folder.setdefault(key, []).append(row)
    table = {}
    for key, images in by_folder.items():
        if any(r["rank"] is None for r in images):
            sys.exit(f"{key}: completions without a ranking; see {out / 'logs'}")
        order = [r["image"] for r in sorted(images, key=lambda r: r["rank"])]
        table[key] = {m: seed_selection({r["image"]: r[m] for r in images}, order) for m in METRICS}
        if key[1] == "":  # RealFill: how the ranking's order compares with other orders
            table[key]["orderings"] = selection_orderings(
                images, out / "results" / images[0]["folder"] / RANKING_FILE
            )
    return table


ORDERINGS = {  # key -> label, in the table's order
    "ranking": "the ranking: correspondences, ties by distance to the completions' median",
    "by_name": "correspondences, ties by file name (the order before the tie-break)",
    "median": "distance to the completions' median alone",
    "oracle": "oracle: by the completions' own PSNR against the ground truth",
}


def selection_orderings(images: list[dict], ranking_file: Path) -> dict:
    """Masked PSNR at 75% drop under each of ORDERINGS, and the Spearman correlation of the
    correspondence count, and of the (negated) median distance, with the completions' PSNR."""
    from scipy.stats import spearmanr

    ranked = {c["image"]: c for c in json.loads(ranking_file.read_text())["candidates"]}
    psnr = {r["image"]: r["PSNR"] for r in images}
    names = sorted(psnr, key=ru.natural_key)
    # a failed candidate (no count) goes last, as in the ranking
    count = {n: -math.inf if ranked[n]["score"] is None else ranked[n]["score"] for n in names}
    median = {n: ranked[n].get("median_rms") for n in names}
    known = all(median[n] is not None for n in names)
    orders = {
        "ranking": [r["image"] for r in sorted(images, key=lambda r: r["rank"])],
        "by_name": sorted(names, key=lambda n: (-count[n], ru.natural_key(n))),
        "median": sorted(names, key=lambda n: (median[n] if known else 0, ru.natural_key(n))),
        "oracle": sorted(names, key=lambda n: -psnr[n]),
    }

    def rho(score: dict) -> float:
        values = [score[n] for n in names]
        return (
            float(spearmanr(values, [psnr[n] for n in names])[0]) if len(set(values)) > 1 else 0.0
        )

    return {
        "psnr_at_75": {
            k: seed_selection(psnr, order)[0.75] if k != "median" or known else None
            for k, order in orders.items()
        },
        "rho_count": rho(count) if all(math.isfinite(v) for v in count.values()) else None,
        "rho_median": rho({n: -median[n] for n in names}) if known else None,
        "tied_at_the_cut": tied_at_cut(orders["ranking"], count),
    }


def tied_at_cut(order: list[str], count: dict, drop: float = 0.75) -> int:
    """How many completions share the correspondence count of the last one kept at `drop`
    when the first one dropped shares it too (the tie-break chose among them); else 0."""
    kept = math.ceil(len(order) * (1 - drop))
    if kept >= len(order) or count[order[kept]] != count[order[kept - 1]]:
        return 0
    return sum(count[n] == count[order[kept - 1]] for n in order)


REFERENCE_ROWS = {  # row key -> label, in the table's order
    "mean": "mean colour of the known region",
    "telea": "OpenCV Telea inpainting",
    "homography": "SIFT + RANSAC homography, best reference",
    "homography_colour": "the same + per-channel colour fit",
    "warp": "warp fill (warp_fill.py: several planes, all references fused)",
    "resize_ceiling": "ceiling: ground truth at the model's size",
    "vae_ceiling": "ceiling: ground truth through the model's size and VAE",
}


def reference_scores(scenes: list[Path], args, out: Path) -> dict:
    """{(scene, row): {"PSNR": dB, "SSIM": s, "seconds": s}} for the simple fills and ceilings,
    scored with the metric scripts' own functions at the ground truth's size."""
    import numpy as np

    import baselines
    from benchmark.psnr import masked_psnr
    from benchmark.ssim import masked_ssim

    components = ru.load_components(args.base_model)
    fills = {
        "mean": baselines.mean_fill,
        "telea": baselines.telea_fill,
        "homography": lambda s: baselines.homography_fill(s)[0],
        "homography_colour": lambda s: baselines.homography_fill(s, colour_fit=True)[0],
        "warp": lambda s: ru.load_image(
            out / "warp" / f"{s.scene_dir.parent.name}-{s.scene_dir.name}-results-warp" / "0.png"
        ),
    }
    table = {}
    for scene_dir in scenes:
        scene = ru.load_scene(scene_dir)
        name = f"{scene_dir.parent.name}-{scene_dir.name}"
        size = ru.model_size(scene.target.size, args.resolution, components.size_multiple)
        ceilings = {
            "resize_ceiling": lambda s, size=size: baselines.resize_ceiling(s, size),
            "vae_ceiling": lambda s, size=size: baselines.vae_ceiling(s, components.vae, size),
        }
        gt = np.asarray(scene.gt)
        for row, fill in {**fills, **ceilings}.items():
            start = time.perf_counter()
            result = np.asarray(fill(scene))
            table[(name, row)] = {
                "PSNR": masked_psnr(gt, result, scene.fill_mask),
                "SSIM": masked_ssim(gt, result, scene.fill_mask),
                "seconds": time.perf_counter() - start,
            }
    return table


def mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else math.nan


def scene_kinds(scenes: list[str]) -> dict[str, str]:
    """Scene -> "flat" (views of a flat photo), "parallax" (a layer moving against the photo)
    or "unseen" (no reference sees the hole), read from data/scenes.json."""
    manifest = json.loads((ROOT / "data" / "scenes.json").read_text())["scenes"]
    kinds = {}
    for entry in manifest:
        name = entry["scene"].replace("/", "-")
        if entry["hole_seen_by_references"] == 0:
            kinds[name] = "unseen"
        else:
            kinds[name] = "parallax" if "layer" in entry else "flat"
    return {s: kinds.get(s, "flat") for s in scenes}


VARIANTS = {  # result-folder suffix -> label, in the tables' order
    "untuned": "un-tuned base",
    "": "RealFill",
    "refill": "ReFill",
    "geo": "geometry-guided RealFill",
}
PER_SCENE_ROWS = {"mean": "mean colour", "telea": "Telea", "warp": "warp fill",
                  "vae_ceiling": "VAE ceiling"}  # fmt: skip


def cell(psnr: float, ssim: float) -> str:
    return f"{psnr:.2f} / {ssim:.3f}"


def verdict(ok: bool) -> str:
    return "**met**" if ok else "**not met**"


def method_means(group: list[str], table: dict, references: dict) -> tuple[dict, dict]:
    """Mean (PSNR, SSIM) over `group` of each reference row, and of each (variant, drop)."""
    ref = {
        row: (
            mean(references[(s, row)]["PSNR"] for s in group),
            mean(references[(s, row)]["SSIM"] for s in group),
        )
        for row in REFERENCE_ROWS
    }
    ours = {
        (v, d): (
            mean(table[(s, v)]["PSNR"][d] for s in group),
            mean(table[(s, v)]["SSIM"][d] for s in group),
        )
        for v in VARIANTS
        for d in DROP_RATES
    }
    return ref, ours


def method_tables(scenes: list[str], kinds: dict, table: dict, references, records) -> list:
    """One table per group (the flat scenes together, each other scene alone): every method
    by seed-selection drop rate."""
    flat = [s for s in scenes if kinds[s] == "flat"]
    groups = [("the flat scenes", flat)] + [
        (f"{s} ({kinds[s]})", [s]) for s in scenes if kinds[s] != "flat"
    ]
    lines = []
    for title, group in groups:
        if not group:
            continue
        ref, ours = method_means(group, table, references)
        lines += [
            "",
            f"## All methods on {title}, by seed-selection drop rate"
            + (f" (mean over {', '.join(group)})" if len(group) > 1 else ""),
            "",
            "| method | " + " | ".join(f"drop {int(d * 100)}%" for d in DROP_RATES) + " |",
            "|---|" + "---|" * len(DROP_RATES),
        ]
        for row, label in REFERENCE_ROWS.items():
            lines.append(f"| {label} | {cell(*ref[row])} |" + " |" * (len(DROP_RATES) - 1))
        for variant, label in VARIANTS.items():
            cells = [cell(*ours[(variant, d)]) for d in DROP_RATES]
            if variant == "refill" and any(records[s][""]["refill_note"] for s in group):
                label += " (round 1 where it did not run: see the notes)"
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def gate_goals(
    scenes: list[str], kinds: dict, table: dict, references: dict, records: dict, num_images: int
) -> tuple[dict, list[str]]:
    """The issues' goals, each True/False, and a line per goal with its figure and verdict."""
    goals, notes = {}, []
    flat = [s for s in scenes if kinds[s] == "flat"]
    if flat:
        ref, ours = method_means(flat, table, references)
        gain = ours[("", 0.0)][0] - ours[("untuned", 0.0)][0]
        ssim_gain = ours[("", 0.0)][1] - ours[("untuned", 0.0)][1]
        beaten = {
            s: all(
                table[(s, "")]["PSNR"][0.0] > references[(s, row)]["PSNR"]
                and table[(s, "")]["SSIM"][0.0] > references[(s, row)]["SSIM"]
                for row in ("mean", "telea")
            )
            for s in flat
        }
        drop_gain = ours[("", 0.75)][0] - ours[("", 0.0)][0]
        geo_vs_warp = ours[("geo", 0.0)][0] - ref["warp"][0]
        goals |= {
            "psnr_gain": gain >= GOAL_PSNR_GAIN and ssim_gain > 0,
            "beats_simple_fills": all(beaten.values()),
            "seed_selection": drop_gain >= 0,
            "geo_near_warp_on_flat": geo_vs_warp >= -1.0,
        }
        missed = [s for s, ok in beaten.items() if not ok]
        notes += [
            f"- RealFill minus un-tuned on the flat scenes, all {num_images} kept: "
            f"{gain:+.2f} dB PSNR, {ssim_gain:+.3f} SSIM (goal: at least +{GOAL_PSNR_GAIN:.0f} "
            f"dB and better SSIM): {verdict(goals['psnr_gain'])}.",
            "- RealFill (all kept) beats the mean-colour fill and Telea in PSNR and SSIM on "
            f"every flat scene: {verdict(goals['beats_simple_fills'])}"
            + (f" (not on {', '.join(missed)})" if missed else "")
            + ".",
            f"- Seed selection on the flat scenes, RealFill at 75% drop minus all kept: "
            f"{drop_gain:+.2f} dB (goal: not worse): {verdict(goals['seed_selection'])}.",
            f"- Geometry-guided RealFill minus the warp fill on the flat scenes: "
            f"{geo_vs_warp:+.2f} dB (goal: within 1 dB or better): "
            f"{verdict(goals['geo_near_warp_on_flat'])}.",
        ]
    for s in scenes:
        geo = table[(s, "geo")]["PSNR"][0.0]
        over_realfill = geo - table[(s, "")]["PSNR"][0.0]
        if kinds[s] == "parallax":
            over_warp = geo - references[(s, "warp")]["PSNR"]
            goals[f"geo_parallax_{s}"] = over_warp >= 1.0 and over_realfill >= 1.0
            notes.append(
                f"- {s} (parallax): geometry-guided RealFill minus the warp fill {over_warp:+.2f} "
                f"dB, minus RealFill {over_realfill:+.2f} dB (goal: both at least +1 dB): "
                f"{verdict(goals[f'geo_parallax_{s}'])}."
            )
        elif kinds[s] == "unseen":
            covered = records[s][""]["hole_covered_by_references"]
            notes.append(
                f"- {s}: the references cover {covered:.0%} of the hole, under the "
                f"{MIN_PRIOR_COVERAGE:.0%} a prior needs, so geometry-guided RealFill sampled "
                "from noise there, as RealFill does (same seeds: the same completions)."
                if covered < MIN_PRIOR_COVERAGE
                else f"- {s}: the references cover {covered:.0%} of the hole."
            )
            goals[f"geo_unseen_{s}"] = over_realfill >= 0
            notes.append(
                f"- {s} (no reference sees the hole): geometry-guided RealFill minus RealFill "
                f"{over_realfill:+.2f} dB (goal: not worse): "
                f"{verdict(goals[f'geo_unseen_{s}'])}."
            )
    for s in scenes:
        if records[s][""].get("refill_note"):
            notes.append(
                f"- ReFill on {s} did not train a second round (refill.py: "
                f'"{records[s][""]["refill_note"].removeprefix("error: ")}"), so its ReFill '
                "row is round 1's result, which is what a user keeps."
            )
    return goals, notes


def per_scene_table(scenes: list[str], table: dict, references: dict) -> list[str]:
    lines = [
        "",
        "## Per scene (all completions kept)",
        "",
        "| scene | " + " | ".join([*VARIANTS.values(), *PER_SCENE_ROWS.values()]) + " |",
        "|---|" + "---|" * (len(VARIANTS) + len(PER_SCENE_ROWS)),
    ]
    for s in scenes:
        cells = [cell(table[(s, v)]["PSNR"][0.0], table[(s, v)]["SSIM"][0.0]) for v in VARIANTS]
        cells += [
            cell(references[(s, r)]["PSNR"], references[(s, r)]["SSIM"]) for r in PER_SCENE_ROWS
        ]
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    return lines


def orderings_table(scenes: list[str], kinds: dict, table: dict, num_images: int) -> list[str]:
    """RealFill's completions kept at 75% drop under each ordering, per scene and on the flat
    scenes' mean, with how well the correspondence count and the median distance foretell a
    completion's PSNR."""
    flat = [s for s in scenes if kinds[s] == "flat"]
    columns = scenes + (["flat mean"] if flat else [])

    def cells(value) -> list[str]:
        per_scene = [value(table[(s, "")]) for s in scenes]
        return per_scene + ([mean(value(table[(s, "")]) for s in flat)] if flat else [])

    kept = math.ceil(num_images / 4)
    lines = [
        "",
        f"## Seed selection: which order keeps the best {kept} of RealFill's {num_images}",
        "",
        "Masked PSNR (dB) of the completions kept at 75% drop, by the order they are ranked in; "
        "then the Spearman correlation of each signal with the completions' own PSNR (1: it "
        "orders them exactly as the ground truth does), and how many completions share the "
        "correspondence count at the cut (the tie-break chose among them).",
        "",
        "| | " + " | ".join(columns) + " |",
        "|---|" + "---|" * len(columns),
        "| all kept | " + " | ".join(f"{v:.2f}" for v in cells(lambda t: t["PSNR"][0.0])) + " |",
    ]

    def row(label: str, value, form: str) -> str:
        try:
            values = [format(v, form) for v in cells(value)]
        except TypeError:  # None somewhere (a ranking without distances): no figures
            values = ["-"] * len(columns)
        return f"| {label} | " + " | ".join(values) + " |"

    for key, label in ORDERINGS.items():
        lines.append(row(label, lambda t, k=key: t["orderings"]["psnr_at_75"][k], ".2f"))
    for key, label in (("rho_count", "correspondence count"), ("rho_median", "median distance")):
        lines.append(
            row(f"correlation with PSNR: {label}", lambda t, k=key: t["orderings"][k], "+.2f")
        )
    ties = [str(table[(s, "")]["orderings"]["tied_at_the_cut"]) for s in scenes]
    lines.append("| completions tied at the cut | " + " | ".join(ties) + (" | |" if flat else " |"))
    return lines


def timing_lines(scenes: list[str], args, table: dict, references: dict, records) -> list:
    """The samplers' table (quality against generation time) and the time each method adds."""
    lines = [
        "",
        "## Samplers on the RealFill model (all completions kept, all scenes)",
        "",
        "Generation time is infer.py's own `generate_s` (models loaded), mean over scenes, "
        "measured in this run on this machine.",
        "",
        f"| sampler | steps | PSNR | SSIM | generation s ({args.num_images} images) | speed-up |",
        "|---|---|---|---|---|---|",
    ]
    ddpm_time = mean(records[s][""]["timings"]["generate_s"] for s in scenes)
    for variant, (scheduler, steps) in SAMPLERS.items():
        psnr = mean(table[(s, variant)]["PSNR"][0.0] for s in scenes)
        ssim = mean(table[(s, variant)]["SSIM"][0.0] for s in scenes)
        seconds = mean(records[s][variant]["timings"]["generate_s"] for s in scenes)
        lines.append(
            f"| {scheduler} | {steps} | {psnr:.2f} | {ssim:.3f} | {seconds:.1f} | "
            f"{ddpm_time / seconds:.2f}x |"
        )

    def seconds_of(key: str, digits: int) -> str:
        values = [records[s][""].get(key) for s in scenes]
        if any(v is None for v in values):  # resumed from a run that kept no timings
            return "n/a (not recorded by the run that made them)"
        return f"{mean(values):.{digits}f} s"

    geo_time = mean(records[s]["geo"]["timings"]["generate_s"] for s in scenes)
    return lines + [
        "",
        f"Time per scene (mean): RealFill training and completions (with the ReFill round "
        f"where it ran) {seconds_of('refill_seconds', 0)}; "
        f"warp_fill.py {seconds_of('warp_seconds', 1)} "
        f"(process included); geometry-guided sampling {geo_time:.1f} s against "
        f"{ddpm_time:.1f} s from pure noise (DDPM 200: a prior at strength {args.strength} "
        "skips the first steps); the in-process reference fills "
        + ", ".join(
            f"{row} {mean(references[(s, row)]['seconds'] for s in scenes):.2f} s"
            for row in ("mean", "telea", "homography")
        )
        + ".",
    ]


def write_results(
    name: str, args, scenes: list[str], table: dict, references: dict, records: dict,
    results_dir: Path = ROOT / "perf" / "results",
) -> Path:  # fmt: skip
    """<results_dir>/<name>.json (everything) and .md (the tables and the verdicts)."""
    kinds = scene_kinds(scenes)
    recipe = " ".join(ru.recipe_flags(args.recipe)) or "train_realfill.py's defaults"
    lines = [
        f"# Quality gate ({name})",
        "",
        f"Command: `{' '.join(['python perf/bench_quality.py', *sys.argv[1:]])}`",
        "",
        f"Base model: `{Path(args.base_model).name}`; scenes: "
        + ", ".join(f"{s} ({kinds[s]})" for s in scenes)
        + f"; {args.num_images} completions each at {args.resolution} px, DDPM 200 unless "
        f"named; RealFill trained {args.max_train_steps} steps at batch 16 with `{recipe}`; "
        f"geometry-guided RealFill starts from the warp fill noised to strength {args.strength} "
        "and pulls each completion towards it per pixel by inverse-variance weighting (the "
        "warp's expected error against the completions' spread: geometry.fuse); "
        "SIFT ranking for seed selection. Scores: masked PSNR (dB) / masked SSIM inside the "
        "hole against gt.png at its own size. The reference fills are deterministic (one "
        "image per scene, no seed selection).",
    ]
    lines += method_tables(scenes, kinds, table, references, records)
    goals, notes = gate_goals(scenes, kinds, table, references, records, args.num_images)
    lines += ["", "## Goals", "", *notes]
    lines += per_scene_table(scenes, table, references)
    lines += orderings_table(scenes, kinds, table, args.num_images)
    lines += timing_lines(scenes, args, table, references, records)
    md = Path(results_dir) / f"{name}.md"
    ru.write_results(
        md,
        {
            "command": sys.argv,
            "settings": {k: str(v) for k, v in vars(args).items()},
            "recipe": args.recipe,
            "scene_kinds": kinds,
            "scores": {f"{s}|{v}": t for (s, v), t in table.items()},
            "reference_scores": {f"{s}|{r}": v for (s, r), v in references.items()},
            "timings": {
                f"{s}|{v}": r["timings"] for s, rs in records.items() for v, r in rs.items()
            },
            "refill_seconds": {s: rs[""].get("refill_seconds") for s, rs in records.items()},
            "warp_seconds": {s: rs[""].get("warp_seconds") for s, rs in records.items()},
            "goals_met": goals,
        },
        lines,
    )
    return md


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=ru.HelpFormatter)
    p.add_argument(
        "--base_model", type=Path, default=ru.TOY_MODEL, help="SD2-inpainting pipeline folder"
    )
    p.add_argument(
        "--scenes",
        nargs="*",
        default=None,
        help="Custom scene numbers (default: every scene in data/Custom)",
    )
    p.add_argument("--resolution", type=int, default=None, help="px; default: the base's recipe")
    p.add_argument(
        "--max_train_steps", type=int, default=None, help="steps; default: the base's recipe"
    )
    p.add_argument("--num_images", type=int, default=16, help="completions per scene and variant")
    p.add_argument(
        "--strength",
        type=float,
        default=None,
        help="geometry-guided start's infer.py --strength; default: the base's recipe",
    )
    p.add_argument(
        "--refill_scenes",
        nargs="*",
        default=None,
        help="scene numbers that get the ReFill round (default: all); the others train once",
    )
    p.add_argument(
        "--output_dir",
        type=Path,
        default=ROOT / "runs" / "quality",
        help="work folder (models, completions, logs); a rerun reuses finished steps",
    )
    p.add_argument("--name", default="quality_gate", help="results file name in perf/results")
    p.add_argument(
        "--docs",
        type=Path,
        default=ROOT / "docs" / "geometry.md",
        help="doc whose gate table is redone (only under the default --name)",
    )
    args = p.parse_args(argv)
    recipe = dict(ru.model_recipe(args.base_model).get("train", {}))
    args.resolution = args.resolution or recipe.get("resolution", ru.RESOLUTION)
    args.max_train_steps = args.max_train_steps or recipe.get("max_train_steps", 2000)
    for handled in ("resolution", "max_train_steps", "train_batch_size"):  # refill.py's own flags
        recipe.pop(handled, None)
    args.recipe = recipe
    infer_recipe = ru.model_recipe(args.base_model).get("infer", {})
    args.strength = args.strength or infer_recipe.get("prior_strength", infer.PRIOR_STRENGTH)
    numbers = args.scenes or sorted(
        (d.name for d in (ROOT / "data" / "Custom").iterdir() if d.name.isdigit()), key=int
    )
    scenes = [ROOT / "data" / "Custom" / n for n in numbers]
    out = args.output_dir.resolve()
    records = {f"Custom-{s.name}": scene_runs(s, args, out) for s in scenes}
    references = reference_scores(scenes, args, out)
    table = score(out, args)
    md = write_results(args.name, args, list(records), table, references, records)
    if args.name == "quality_gate":  # the committed gate's figures, not a side experiment's
        ru.replace_between_markers(args.docs, DOCS_BEGIN, DOCS_END, geometry_summary(md))
    print(md.read_text())


DOCS_BEGIN = "<!-- quality gate table: written by perf/bench_quality.py -->"
DOCS_END = "<!-- end of quality gate table -->"


def geometry_summary(md: Path) -> str:
    """What docs/geometry.md shows of the gate: its command, the per-scene table and the
    geometry goals' verdicts, copied from the results file just written."""
    text = md.read_text()
    command = next(line for line in text.splitlines() if line.startswith("Command:"))
    per_scene = text.split("## Per scene (all completions kept)", 1)[1].split("\n## ", 1)[0]
    goals = text.split("## Goals", 1)[1].split("\n## ", 1)[0].splitlines()
    geometry = [g for g in goals if "geometry-guided" in g.lower() or "prior" in g.lower()]
    return "\n".join(
        [
            f"{command} (all completions kept; masked PSNR dB / SSIM inside the hole; full "
            "results in [perf/results/quality_gate.md](../perf/results/quality_gate.md))",
            "",
            per_scene.strip(),
            "",
            *geometry,
        ]
    )


if __name__ == "__main__":
    main()
