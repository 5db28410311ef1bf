"""RealBench in one command: every scene trained, completed, ranked, (optionally ReFilled) and
measured, resumably, with the paper's table beside ours at the end.

RealBench is the archive linked from the RealFill project page (https://realfill.github.io):
33 scenes, RealBench/<N>/ref/*, RealBench/<N>/target/{target,mask,gt}.png. Unpack it and pass
the folder that holds RealBench/ (or the RealBench folder itself). Every scene is validated
before any work starts.

Per scene, each stage runs the project's own script and is recorded in
<output_dir>/runs/<scene>/state.json when it has finished; a re-run skips finished stages, so a
killed run loses at most the stage in progress (an interrupted training resumes from its last
checkpoint). Subcommands:

  run     set up (or resume) the run and do every scene: one at a time, or one per GPU
  scene   do one scene (what each SLURM array task calls; --index = $SLURM_ARRAY_TASK_ID)
  status  print the per-scene table (done / running / failed with the reason), at any time
  slurm   set up the run and write a SLURM job-array script, one array task per scene
  report  gather: benchmarks.py over the finished scenes, and the paper's table beside ours

  # one machine, four GPUs, the paper's recipe (64 completions, seed selection, LoFTR ranking)
  python run_realbench.py run --realbench_dir realfill_data_release_full \\
      --output_dir runs/realbench --gpus 0,1,2,3 --mixed_precision fp16 \\
      --train_args "--use_8bit_adam --gradient_checkpointing" --loftr_weights loftr_outdoor.ckpt
  python run_realbench.py status --output_dir runs/realbench     # from another shell
  python run_realbench.py run --output_dir runs/realbench --gpus 0,1,2,3   # resume

  # a cluster: one array task per scene, then the gather step
  python run_realbench.py slurm --realbench_dir /shared/realfill_data_release_full \\
      --output_dir /shared/runs/realbench --partition gpu --time 12:00:00
  sbatch /shared/runs/realbench/slurm/realbench.sbatch
  python run_realbench.py report --output_dir /shared/runs/realbench

Recipe flags are stored in <output_dir>/realbench_run.json when the run is set up; later
commands read them from there, and refuse a flag that differs (use a new --output_dir).
See docs/realbench.md for the layout, the state file and the expected GPU-hours.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import shlex
import subprocess
import sys
import threading
from dataclasses import fields
from pathlib import Path

import loftr_ranking as lr
import realfill_utils as ru
import scene_engine as engine
from benchmark import realbench_report
from benchmark.common import METRICS, unavailable
from benchmark.realbench_report import PAPER_SCENES
from benchmark.report import render_text
from scene_engine import say

ROOT = Path(__file__).resolve().parent
SCRIPT = Path(__file__).resolve()
SCHEMA_VERSION = 1  # of realbench_run.json and runs/<scene>/state.json
CONFIG_FILE = "realbench_run.json"
WHERE = (
    "RealBench is the archive linked from the RealFill project page (https://realfill.github.io); "
    "unpack it and pass the folder holding RealBench/<N>/ref and RealBench/<N>/target"
)
DATASETS = {"RealBench": "realbench_dir", "Custom": "custom_dir"}  # dataset -> flag

# What every scene is run with: the training recipe's fields (ru.Recipe, the paper's defaults)
# that are flags here, and the benchmark protocol's own.
RECIPE_FIELDS = ("pretrained_model_name_or_path", "resolution", "train_batch_size",
                 "max_train_steps", "seed", "mixed_precision", "num_inference_steps",
                 "scheduler")  # fmt: skip
DEFAULTS = {f: getattr(ru.Recipe(), f) for f in RECIPE_FIELDS} | {
    "num_images": 64,  # completions per scene before seed selection (the paper's protocol)
    "matcher": "loftr",  # the paper ranks by LoFTR correspondences; sift needs no weights
    "loftr_weights": None,  # None: $REALFILL_LOFTR_WEIGHTS or kornia's cached checkpoint
    "refill": False,  # also run the ReFill round (refill.py's stages) and benchmark it
    "target_count": engine.TARGET_COUNT,
    "geometry": False,  # guide the completions by the warp fill (docs/geometry.md)
    "metrics": list(METRICS),
    "train_args": "",
    "infer_args": "",
    "scenes": None,  # None: every scene found
}


# ---------------------------------------------------------------------------------------------
# Scenes: discovery and validation, all before any work
# ---------------------------------------------------------------------------------------------
def find_scenes(dataset: str, folder: Path) -> tuple[Path, list[dict]]:
    """(dataset folder, scenes) of <folder>/<dataset>/<N> or <folder>/<N>, numerically sorted."""
    base = folder / dataset if (folder / dataset).is_dir() else folder
    where = WHERE if dataset == "RealBench" else "Custom scenes use the RealBench layout"
    if not base.is_dir():
        raise ru.SceneError(f"{folder}: folder not found (--{DATASETS[dataset]}). {where}")
    numbered = sorted(
        (p for p in base.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name)
    )
    if not numbered:
        raise ru.SceneError(
            f"{base}: no scene folders <N>/ (with ref/ and target/) in it (--{DATASETS[dataset]})."
            f" {where}"
        )
    return base.resolve(), [
        {"name": f"{dataset}-{p.name}", "dataset": dataset, "scene_dir": str(p.resolve())}
        for p in numbered
    ]


# ---------------------------------------------------------------------------------------------
# The run's configuration: scenes in array order + recipe, written once
# ---------------------------------------------------------------------------------------------
def normalise(key: str, value):
    """The stored form of a recipe value (absolute paths, split argument strings)."""
    if key in ("pretrained_model_name_or_path", "loftr_weights") and value:
        local = Path(value).expanduser()
        return str(local.resolve()) if local.exists() else str(value)
    if key in ("train_args", "infer_args"):
        return shlex.join(shlex.split(value or ""))
    return value


def read_config(output_dir: Path) -> dict:
    path = output_dir / CONFIG_FILE
    if not path.is_file():
        raise ru.SceneError(
            f"{path}: not found; set the run up first with `run_realbench.py run` or `slurm` "
            "(with --realbench_dir)"
        )
    try:
        config = json.loads(path.read_text())
    except ValueError as err:
        raise ru.SceneError(f"{path}: unreadable ({err})") from None
    if config.get("schema_version") != SCHEMA_VERSION:
        raise ru.SceneError(f"{path}: schema_version {config.get('schema_version')!r} unknown")
    return config


def set_up(args: argparse.Namespace) -> dict:
    """Create or check the run's configuration; validate every scene. Returns the config.

    A recipe flag given now that differs from the stored recipe is refused: finished stages
    were made with the stored one and must not be mixed with new ones."""
    output_dir = args.output_dir.resolve()
    given = {k: normalise(k, v) for k in DEFAULTS if (v := getattr(args, k, None)) is not None}
    folders = {d: getattr(args, flag, None) for d, flag in DATASETS.items()}
    old = read_config(output_dir) if (output_dir / CONFIG_FILE).is_file() else None
    if old:
        changed = [
            f"--{k}: {old['recipe'].get(k, DEFAULTS[k])!r} -> {v!r}"
            for k, v in given.items()
            if old["recipe"].get(k, DEFAULTS[k]) != v
        ]
        changed += [
            f"--{DATASETS[d]}: {old['datasets'][d]} -> {f.resolve()}"
            for d, f in folders.items()
            if f is not None and old["datasets"][d] != str(find_scenes(d, f.resolve())[0])
        ]
        if changed:
            raise ru.SceneError(
                f"{output_dir} was set up with another recipe ({'; '.join(changed)}); its "
                "finished stages would be mixed with new ones: use a new --output_dir, or drop "
                "these flags to continue with the stored recipe"
            )
        folders = {d: Path(f) if f else None for d, f in old["datasets"].items()}
        recipe = old["recipe"]
    else:
        if not any(folders.values()):
            raise ru.SceneError(f"pass --realbench_dir (and/or --custom_dir). {WHERE}")
        recipe = DEFAULTS | given
    if recipe["num_images"] < 1 or recipe["max_train_steps"] < 1:
        raise ru.SceneError("--num_images and --max_train_steps must be at least 1")
    unknown = [m for m in recipe["metrics"] if m not in METRICS]
    if unknown:
        raise ru.SceneError(f"unknown metrics {unknown}: choose from {', '.join(METRICS)}")

    scenes, datasets = [], {d: None for d in DATASETS}
    for dataset in DATASETS:  # RealBench first, then Custom: the array order
        folder = folders.get(dataset)
        if folder is not None:
            base, found = find_scenes(dataset, folder.expanduser().resolve())
            datasets[dataset] = str(base)
            scenes += found
    for folder in filter(None, datasets.values()):
        if ru.overlaps(output_dir, Path(folder)):
            raise ru.SceneError(
                f"--output_dir {output_dir} overlaps the dataset {folder}: the dataset is only "
                "read, so put the run somewhere else"
            )
    if recipe["scenes"]:
        names = [s["name"] for s in scenes]
        missing = [n for n in recipe["scenes"] if n not in names]
        if missing:
            raise ru.SceneError(f"--scenes {' '.join(missing)}: not found; there are {names}")
        scenes = [s for s in scenes if s["name"] in recipe["scenes"]]
    if old and [s["name"] for s in scenes] != [s["name"] for s in old["scenes"]]:
        then, now_ = {s["name"] for s in old["scenes"]}, {s["name"] for s in scenes}
        raise ru.SceneError(
            f"the dataset folders now hold other scenes than when {output_dir} was set up "
            f"(gone: {sorted(then - now_) or 'none'}; new: {sorted(now_ - then) or 'none'}): "
            "restore them, or use a new --output_dir"
        )

    print(f"checking {len(scenes)} scenes ...", flush=True)
    problems = [
        f"{s['name']}: {p}" for s in scenes if (p := engine.scene_problem(Path(s["scene_dir"])))
    ]
    if problems:
        raise ru.SceneError(
            f"{len(problems)} of {len(scenes)} scenes cannot be used; nothing was started:\n  "
            + "\n  ".join(problems)
            + f"\nFix them (a damaged RealBench can be unpacked again: {WHERE}) and run again."
        )
    realbench = sum(s["dataset"] == "RealBench" for s in scenes)
    if datasets["RealBench"] and realbench != PAPER_SCENES:
        print(
            f"note: this run has {realbench} RealBench scenes, the paper's numbers average "
            f"all {PAPER_SCENES}: the comparison is only indicative",
            flush=True,
        )
    ru.resolve_model_path(recipe["pretrained_model_name_or_path"])  # fail now, not per scene
    missing = unavailable(recipe["metrics"])  # now, not in each scene's last stage
    if missing:
        why = "; ".join(f"{name}: {reason}" for name, reason in missing.items())
        kept = " ".join(m for m in recipe["metrics"] if m not in missing)
        if old:  # its metrics are settled: the report marks these unavailable
            ru.note(f"metrics unavailable here ({why}); the report will say so")
        else:
            raise ru.SceneError(
                f"metrics unavailable here: {why}"
                + (f". Make them available, or leave them out: --metrics {kept}" if kept else "")
            )
    known = {f.name for f in fields(ru.Recipe)}
    engine.check_stage_args(  # the stages' own parsers, on the stored recipe: now, not per scene
        ru.Recipe.for_model(**{k: v for k, v in recipe.items() if k in known}),
        shlex.split(recipe["train_args"]), shlex.split(recipe["infer_args"]),
        geometry=bool(recipe.get("geometry")),
        on_gpu_node=getattr(args, "command", None) == "slurm",  # fp16: the nodes have GPUs
    )  # fmt: skip
    if recipe["matcher"] == "loftr":  # found and loadable: now, not at each scene's ranking
        recipe["loftr_weights"] = lr.check_matcher("loftr", recipe["loftr_weights"]).weights
    if old:
        return old
    config = {
        "schema_version": SCHEMA_VERSION,
        "created": engine.now(),
        "datasets": datasets,
        "scenes": scenes,
        "recipe": recipe,
    }
    if output_dir.is_dir():
        theirs = [p.name for p in sorted(output_dir.iterdir()) if not p.name.startswith(".")]
        if theirs:  # no run was set up here: everything in it is someone else's
            raise ru.SceneError(
                f"--output_dir {output_dir} holds files that no run set up ({', '.join(theirs[:4])}"
                f"); a run writes only into a new or empty folder: choose another --output_dir"
            )
    ru.check_output_dir(output_dir)
    ru.atomic_write_json(config, output_dir / CONFIG_FILE)
    return config


def pick_scene(config: dict, index: int | None, name: str | None) -> tuple[int, dict]:
    names = [s["name"] for s in config["scenes"]]
    if name is not None:
        if name not in names:
            raise ru.SceneError(f"--scene {name}: not in this run; its scenes are {names}")
        index = names.index(name)
    if index is None or not 0 <= index < len(names):
        raise ru.SceneError(
            f"--index {index}: this run has {len(names)} scenes, indices 0-{len(names) - 1}"
        )
    return index, config["scenes"][index]


# ---------------------------------------------------------------------------------------------
# Status
# ---------------------------------------------------------------------------------------------
def status_table(out: Path, config: dict) -> tuple[str, dict[str, dict]]:
    """The per-scene status table as text, and its rows (scene name -> status row)."""
    recipe = config["recipe"]
    rows = {
        s["name"]: engine.bench_scene_status(out / "runs" / s["name"], recipe)
        for s in config["scenes"]
    }
    total = len(engine.bench_stage_names(recipe))
    table = [
        [name, r["status"], r["stage"], f"{r['done']}/{total}", f"{r['hours']:.2f}", r["detail"]]
        for name, r in rows.items()
    ]
    head = ["scene", "status", "stage", "stages", "hours", "detail"]
    counts: dict[str, int] = {}
    for r in rows.values():
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    order = ("done", "running", "failed", "stopped", "pending")
    hours = sum(r["hours"] for r in rows.values())
    summary = (
        ", ".join(f"{counts[s]} {s}" for s in order if s in counts)
        + f"; {hours:.2f} h of finished stages"
        + " (GPU-hours where each scene had one GPU)"
    )
    return render_text([("table", head, table)]) + summary, rows


# ---------------------------------------------------------------------------------------------
# Every scene on one machine: one at a time, or one per GPU
# ---------------------------------------------------------------------------------------------
def scene_command(out: Path, index: str) -> list[str]:
    """The per-scene command; SLURM array tasks run it with index = $SLURM_ARRAY_TASK_ID."""
    return [sys.executable, str(SCRIPT), "scene", "--output_dir", str(out), "--index", index]


def run_all(out: Path, config: dict, gpus: list[str | None]) -> dict[str, int]:
    """Run every scene's command, one scene per device in `gpus` at a time; returns
    name -> exit status. Ctrl-C or SIGTERM stops the running scenes and starts no more."""
    todo: queue.SimpleQueue = queue.SimpleQueue()
    for index in range(len(config["scenes"])):
        todo.put(index)
    threads_each = max(1, (os.cpu_count() or 1) // len(gpus))
    codes: dict[str, int] = {}
    procs: set[subprocess.Popen] = set()
    lock, stop = threading.Lock(), threading.Event()

    def worker(device: str | None) -> None:
        env = dict(os.environ)
        if device is not None:
            env["CUDA_VISIBLE_DEVICES"] = device  # "" = no GPU (--gpus cpu)
        if len(gpus) > 1 and "OMP_NUM_THREADS" not in os.environ:
            env["OMP_NUM_THREADS"] = str(threads_each)  # share the CPU cores
        where = "the CPU" if device == "" else f"GPU {device}" if device else "default device"
        while True:
            try:
                index = todo.get_nowait()
            except queue.Empty:
                return
            name = config["scenes"][index]["name"]
            with lock:
                if stop.is_set():
                    return
                say(f"[{name}] starting on {where}")
                proc = subprocess.Popen(scene_command(out, str(index)), env=env)
                procs.add(proc)
            codes[name] = proc.wait()
            with lock:
                procs.discard(proc)

    threads = [threading.Thread(target=worker, args=(device,)) for device in gpus]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    except KeyboardInterrupt:
        with lock:
            stop.set()
            for proc in procs:
                proc.terminate()  # each scene runner stops its stage; the state says where
        raise
    return codes


def remember_gpus(out: Path, config: dict, given: str | None) -> str | None:
    """--gpus as given, stored in the config; a resumed run without it uses the stored one."""
    if given is None:
        if config.get("gpus") is not None:
            print(f"--gpus {config['gpus']}, as the run was started", flush=True)
        return config.get("gpus")
    if config.get("gpus") != given:
        config["gpus"] = given  # devices do not change results: not part of the recipe
        ru.atomic_write_json(config, out / CONFIG_FILE)
    return given


def parse_gpus(text: str | None) -> list[str | None]:
    if text is None:
        return [None]  # one scene at a time, on whatever device the scripts pick
    if text == "cpu":
        return [""]
    gpus = [g.strip() for g in text.split(",") if g.strip()]
    if not gpus:
        raise ru.SceneError(f"--gpus {text!r}: give GPU ids such as 0,1,2,3, or cpu")
    return gpus


# ---------------------------------------------------------------------------------------------
# SLURM
# ---------------------------------------------------------------------------------------------
def report_command(out: Path) -> list[str]:
    return [sys.executable, str(SCRIPT), "report", "--output_dir", str(out)]


def slurm_script(out: Path, config: dict, args: argparse.Namespace) -> str:
    """An sbatch job-array script: task i runs the per-scene command for scene i."""
    n = len(config["scenes"])
    array = f"0-{n - 1}" + (f"%{args.max_parallel}" if args.max_parallel else "")
    options = [f"--job-name={args.job_name}", f"--array={array}", f"--gres={args.gres}"]
    options += [f"--partition={args.partition}"] if args.partition else []
    options += [f"--time={args.time}"] if args.time else []
    options += [f"--cpus-per-task={args.cpus_per_task}"] if args.cpus_per_task else []
    options += list(args.sbatch_option)
    options.append(f"--output={out / 'slurm' / 'logs' / '%A_%a.out'}")
    per_scene = shlex.join(scene_command(out, "")[:-1]) + ' "$SLURM_ARRAY_TASK_ID"'
    status = shlex.join([sys.executable, str(SCRIPT), "status", "--output_dir", str(out)])
    scenes = "\n".join(f"#   {i}: {s['name']}" for i, s in enumerate(config["scenes"]))
    return "\n".join(
        [
            "#!/bin/bash",
            f"# RealBench with RealFill: one array task per scene ({n} scenes), written by",
            "# run_realbench.py slurm. A task that stops (time limit, node failure) resumes",
            "# where it stopped when submitted again, e.g. sbatch --array=3,7 <this file>.",
            f"# Progress: {status}",
            f"# Gather:   {shlex.join(report_command(out))}",
            "# Array index -> scene:",
            scenes,
            *[f"#SBATCH {o}" for o in options],
            "set -euo pipefail",
            f"exec {per_scene}",
            "",
        ]
    )


def write_slurm(out: Path, config: dict, args: argparse.Namespace) -> Path:
    path = out / "slurm" / "realbench.sbatch"
    (out / "slurm" / "logs").mkdir(parents=True, exist_ok=True)  # sbatch does not create it
    with ru.atomic_path(path) as tmp:
        tmp.write_text(slurm_script(out, config, args))
        tmp.chmod(0o755)
    return path


# ---------------------------------------------------------------------------------------------
# Report: benchmarks.py over the finished scenes, and the paper's table beside ours
# ---------------------------------------------------------------------------------------------
def write_report(out: Path, config: dict) -> tuple[Path, str]:
    """Benchmark every finished scene (scores come from the per-scene runs' cache) and write
    report/realbench_report.md; returns its path and the text version."""
    _, statuses = status_table(out, config)
    done = [s for s in config["scenes"] if statuses[s["name"]]["status"] == "done"]
    if not done:
        raise ru.SceneError(f"no scene of {out} has finished yet: nothing to report (see status)")
    report_dir = out / "report"
    folders = []
    for scene in done:
        where = engine.Layout(out, scene["name"])
        folders += [where.results] + ([where.results_refill] if config["recipe"]["refill"] else [])
    engine.make_view(report_dir / "results", folders)
    report_file = report_dir / "benchmark_report.txt"
    command = engine.bench_command(config, report_dir / "results", report_file, out)
    engine.run_script(command, report_dir / "benchmarks.log")
    scores = json.loads((report_dir / "benchmark_report_scores.json").read_text())
    return realbench_report.write(report_dir, config, scores, report_file, statuses)


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------
def add_recipe_flags(p: argparse.ArgumentParser) -> None:
    """Recipe flags: None unless given, so a resume can tell them apart (set_up)."""

    def flag(name: str, help: str, **kwargs) -> None:
        default = DEFAULTS[name]
        shown = " ".join(default) if isinstance(default, list) else default
        shown = "" if default is None else f" (default: {shown})"  # None: the help says it
        p.add_argument(f"--{name}", default=None, help=help + shown, **kwargs)

    p.add_argument("--realbench_dir", type=Path, default=None, help=f"{WHERE}")
    p.add_argument("--custom_dir", type=Path, default=None, help="Custom/<N>/... scenes, too")
    flag("scenes", "only these scenes, e.g. RealBench-1 Custom-2; default: all", nargs="+")
    ru.add_recipe_flags(p, RECIPE_FIELDS, note="{value}")  # the recipe's help, default shown
    flag("num_images", "completions per scene, before seed selection", type=ru.positive_int)
    flag("matcher", "seed-selection ranking; sift needs no weights", choices=lr.MATCHERS)
    flag("loftr_weights", f"LoFTR checkpoint; default: ${lr.WEIGHTS_ENV} or kornia's cache")
    flag("refill", "also run and benchmark ReFill", action=argparse.BooleanOptionalAction)
    flag("target_count", "ReFill: references in the second round", type=ru.positive_int)
    flag(
        "geometry",
        "geometry-guided completion: warp_fill.py first, then sampling guided by its fill",
        action=argparse.BooleanOptionalAction,
    )
    flag("metrics", f"benchmark metrics, of {' '.join(METRICS)}", nargs="+")
    flag("train_args", "more train_realfill.py flags, one string", type=ru.shell_words)
    flag("infer_args", "more infer.py flags, one string", type=ru.shell_words)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=ru.HelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help, formatter_class=ru.HelpFormatter)
        p.add_argument("--output_dir", type=Path, required=True, help="the run's folder")
        return p

    p = command("run", "set up or resume the run and do every scene, then the report")
    p.add_argument(
        "--gpus",
        default=None,
        help="GPU ids, one scene per GPU at a time (e.g. 0,1,2,3); 'cpu' = no GPU; "
        "default: one scene at a time on the device the scripts pick",
    )
    add_recipe_flags(p)
    p = command("scene", "do one scene (the per-scene command of the SLURM array)")
    p.add_argument("--index", type=int, default=None, help="0-based, e.g. $SLURM_ARRAY_TASK_ID")
    p.add_argument("--scene", default=None, help="or the scene's name, e.g. RealBench-7")
    command("status", "print the per-scene status table")
    p = command("slurm", "set up the run and write a SLURM job-array script")
    add_recipe_flags(p)
    p.add_argument("--partition", default=None, help="#SBATCH --partition")
    p.add_argument("--time", default=None, help="#SBATCH --time per scene, e.g. 12:00:00")
    p.add_argument("--gres", default="gpu:1", help="#SBATCH --gres: one GPU per scene")
    p.add_argument("--cpus_per_task", type=int, default=None, help="#SBATCH --cpus-per-task")
    p.add_argument("--max_parallel", type=int, default=None, help="array throttle (%%N)")
    p.add_argument("--job_name", default="realbench", help="#SBATCH --job-name")
    p.add_argument(
        "--sbatch_option",
        action="append",
        default=[],
        help="another #SBATCH line, repeatable, e.g. --sbatch_option=--mem=64G",
    )
    command("report", "benchmark the finished scenes; write the paper's table beside ours")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    out = args.output_dir.resolve()

    def command() -> int:
        if args.command == "scene":
            config = read_config(out)
            index, _ = pick_scene(config, args.index, args.scene)
            return engine.run_bench_scene(out, config, index)
        if args.command == "status":
            print(status_table(out, read_config(out))[0])
            return ru.EXIT_OK
        if args.command == "report":
            path, text = write_report(out, read_config(out))
            print(f"{text}\nwritten to {path}")
            return ru.EXIT_OK
        if args.command == "run":
            parse_gpus(args.gpus)  # bad input: answered before the scenes are checked
        config = set_up(args)
        if args.command == "slurm":
            path = write_slurm(out, config, args)
            gather = shlex.join(report_command(out))
            print(
                f"wrote {path} ({len(config['scenes'])} array tasks)\n"
                f"submit:  sbatch {path}\nprogress: {sys.executable} {SCRIPT} status "
                f"--output_dir {out}\ngather:  {gather}\n"
                f"or chain: sbatch --dependency=afterany:<job id> --wrap {shlex.quote(gather)}"
            )
            return ru.EXIT_OK
        gpus = parse_gpus(remember_gpus(out, config, args.gpus))
        codes = run_all(out, config, gpus)
        table, statuses = status_table(out, config)
        print(f"\n{table}")
        if any(s["status"] == "done" for s in statuses.values()):
            path, text = write_report(out, config)
            print(f"\n{text}\nwritten to {path}")
        return ru.EXIT_OK if all(code == 0 for code in codes.values()) else ru.EXIT_FAILED

    return ru.run_main(
        command,
        interrupted="interrupted: run the same command again to resume",
        failed={engine.StageFailed: "error: the report's benchmarks.py failed: {err}"},
    )


if __name__ == "__main__":
    ru.interrupt_on_sigterm()  # SIGTERM (kill, scancel) stops like Ctrl-C: stages are killed
    sys.exit(main())
