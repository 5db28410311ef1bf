"""ReFill: run RealFill twice, the second time with the best first-round completions added to
the references.

One command, five stages, each writing its own folder under --output_dir:

  1. train         train_realfill.py on the scene          -> models/<scene>-model
  2. infer         infer.py                                -> results/<scene>-results
  3. select        rank the completions (loftr_ranking.py); build a NEW scene folder with the
                   original references + the best completions (up to --target_count references
                   in all) + the same target                -> scenes/<scene>-refill
  4. train_refill  train_realfill.py on that scene          -> models/<scene>-model-refill
  5. infer_refill  infer.py                                 -> results/<scene>-results-refill

The dataset folder is only read. A finished stage is recorded in refill_state.json and skipped
when the command is run again (an interrupted training resumes from its last checkpoint);
refill_summary.json says what was done. `benchmarks.py --results_base_dir <output_dir>/results`
compares the two rounds as variants of one scene.

  python refill.py --train_data_dir RealBench/23 --output_dir runs/refill-23 --matcher sift

  # quick check on a tiny random model (see make_tiny_model.py)
  python refill.py --pretrained_model_name_or_path models/tiny --train_data_dir RealBench/23 \\
      --output_dir runs/tiny-refill --resolution 32 --max_train_steps 2 --num_images 4 \\
      --num_inference_steps 2 --matcher sift
"""

from __future__ import annotations

import argparse
import json
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import loftr_ranking as lr
import realfill_utils as ru

ROOT = Path(__file__).resolve().parent
TRAIN_SCRIPT = ROOT / "train_realfill.py"
INFER_SCRIPT = ROOT / "infer.py"
SCHEMA_VERSION = 1  # of refill_state.json and refill_summary.json
SCRIPT = "refill.py"  # the owner recorded in the output folder's manifest
STATE_FILE = "refill_state.json"
SUMMARY_FILE = "refill_summary.json"
STAGES = ("train", "infer", "select", "train_refill", "infer_refill")
TARGET_COUNT = 5  # references in the second round, originals included (RealBench has 1-5)
LOG_TAIL = 15  # lines of a failed stage's log shown on the console


class StageFailed(RuntimeError):
    pass


def scene_name(scene_dir: Path) -> str:
    """'RealBench-23' for .../RealBench/23: the name benchmarks.py expects in result folders."""
    if scene_dir.name.isdigit() and scene_dir.parent.name:
        return f"{scene_dir.parent.name}-{scene_dir.name}"
    raise ru.SceneError(
        f"{scene_dir}: cannot name the scene from its path (expected <dataset>/<number>, e.g. "
        "RealBench/23); pass --scene_name, e.g. Custom-1"
    )


class Layout:
    """Where every stage writes, under the output folder."""

    def __init__(self, output_dir: Path, name: str):
        self.root = output_dir
        self.model = output_dir / "models" / f"{name}-model"
        self.results = output_dir / "results" / f"{name}-results"
        self.scene = output_dir / "scenes" / f"{name}-refill"
        self.model_refill = output_dir / "models" / f"{name}-model-refill"
        self.results_refill = output_dir / "results" / f"{name}-results-refill"
        self.logs = output_dir / "logs"


# ---------------------------------------------------------------------------------------------
# Stage commands: what is passed on to train_realfill.py and infer.py
# ---------------------------------------------------------------------------------------------
def train_command(args, scene_dir: Path, model_dir: Path) -> list[str]:
    command = [
        str(TRAIN_SCRIPT),
        "--pretrained_model_name_or_path", str(args.pretrained_model_name_or_path),
        "--train_data_dir", str(scene_dir),
        "--output_dir", str(model_dir),
        "--resolution", str(args.resolution),
        "--train_batch_size", str(args.train_batch_size),
        "--max_train_steps", str(args.max_train_steps),
        "--seed", str(args.seed),
        "--resume_from_checkpoint", "latest",  # an interrupted stage continues where it was
    ]  # fmt: skip
    if args.mixed_precision:
        command += ["--mixed_precision", args.mixed_precision]
    return command + shlex.split(args.train_args)


def infer_command(args, scene_dir: Path, model_dir: Path, results_dir: Path) -> list[str]:
    command = [
        str(INFER_SCRIPT),
        "--model_path", str(model_dir),
        "--validation_image", str(scene_dir / "target" / "target.png"),
        "--validation_mask", str(scene_dir / "target" / "mask.png"),
        "--output_dir", str(results_dir),
        "--num_images", str(args.num_images),
        "--num_inference_steps", str(args.num_inference_steps),
        "--scheduler", args.scheduler,
        "--seed", str(args.seed),
    ]  # fmt: skip
    if args.mixed_precision:
        command += ["--mixed_precision", args.mixed_precision]
    return command + shlex.split(args.infer_args)


def run_logged(command: list[str], log: Path, tie_to_parent: bool = False) -> None:
    """Run a script with this Python, its output into `log`; raise StageFailed with its tail.
    `tie_to_parent`: on Linux the script gets SIGTERM if this process dies (run_realbench.py's
    scene runner: a killed runner leaves no stage working on behind its scene lock)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as out:
        code = subprocess.run(
            [sys.executable, *command],
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent if tie_to_parent and sys.platform == "linux" else None,
        ).returncode  # the caller's working directory: relative paths mean what they meant
    if code:
        tail = log.read_text(errors="replace").strip().splitlines()[-LOG_TAIL:]
        raise StageFailed(f"exit status {code}; last lines of {log}:\n  " + "\n  ".join(tail))


def die_with_parent() -> None:
    """In a child before exec: ask Linux for SIGTERM when the parent process dies."""
    import ctypes

    PR_SET_PDEATHSIG = 1  # from <sys/prctl.h>
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def check_model(model_dir: Path) -> None:
    for name in (ru.LORA_FILE, ru.SETTINGS_FILE):
        if not (model_dir / name).is_file():
            raise StageFailed(f"training finished without writing {model_dir / name}")


def completions(results_dir: Path, num_images: int) -> list[Path]:
    paths = [results_dir / f"{i}.png" for i in range(num_images)]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise StageFailed(f"{results_dir} lacks {', '.join(missing[:5])}")
    return paths


# ---------------------------------------------------------------------------------------------
# State: which stages are done, with which settings
# ---------------------------------------------------------------------------------------------
def flag_of(settings: list, index: int, labels: list[str] | None = None) -> str:
    """The flag a setting belongs to: its label, or the nearest "--flag" before it."""
    if labels is not None:
        return labels[index] if index < len(labels) else "an argument"
    for item in reversed(settings[: index + 1]):
        if isinstance(item, str) and item.startswith("--"):
            return item.split("=", 1)[0]
    return "an argument"


class State:
    """refill_state.json: {"schema_version": 1, "scene_dir": ..., "stages": {stage: {"settings":
    [...], "seconds": s, ...}}}. A stage is in it only once it has finished and been checked."""

    def __init__(self, path: Path, scene_dir: Path):
        self.path = path
        self.data = {"schema_version": SCHEMA_VERSION, "scene_dir": str(scene_dir), "stages": {}}
        if path.is_file():
            try:
                self.data = json.loads(path.read_text())
            except ValueError as err:
                raise ru.SceneError(
                    f"{path}: unreadable ({err}); delete it to redo every stage"
                ) from None
            if self.data.get("scene_dir") != str(scene_dir):
                raise ru.SceneError(
                    f"{path.parent} holds a ReFill run of {self.data.get('scene_dir')}, not of "
                    f"{scene_dir}: choose another --output_dir"
                )

    def done(self, stage: str, settings: list, labels: list[str] | None = None) -> dict | None:
        """The stage's record if it finished with these settings; None if it has not run.
        `labels`: the flag of each setting, where the settings are not a flag list."""
        record = self.data["stages"].get(stage)
        if record is None:
            return None
        if record["settings"] != settings:
            old, new = record["settings"], settings
            changed = [
                f"{flag_of(new, i, labels)}: {a} -> {b}"
                for i, (a, b) in enumerate(zip(old, new, strict=False))
                if a != b
            ]
            raise ru.SceneError(
                f"{self.path.parent}: stage '{stage}' finished earlier with other settings "
                f"({'; '.join(changed[:4]) or 'another argument list'}); use a new --output_dir, "
                f"or delete that stage's folder and its entry in {self.path.name} to redo it"
            )
        return record

    def finish(self, stage: str, settings: list, **record) -> None:
        self.data["stages"][stage] = {"settings": settings, **record}
        ru.atomic_write_json(self.data, self.path)


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------
def run_refill(args) -> dict:
    """Run (or resume) the five stages; return the summary that is also written to disk."""
    scene_dir = args.train_data_dir.resolve()
    scene = ru.load_scene(scene_dir)  # every input problem surfaces now, not after training
    output_dir = args.output_dir.resolve()
    name = args.scene_name or scene_name(scene_dir)
    entries = ["models", "results", "scenes", "logs", STATE_FILE, SUMMARY_FILE]
    ru.claim_output_dir(output_dir, SCRIPT, entries, {"the scene": scene_dir})
    where = Layout(output_dir, name)
    state = State(output_dir / STATE_FILE, scene_dir)
    extra = args.target_count - len(scene.reference_paths)
    if extra <= 0:
        print(f"note: the scene has {len(scene.reference_paths)} references already: the "
              f"second round adds none (raise --target_count to add completions)")  # fmt: skip
    matcher = None
    if "select" not in state.data["stages"]:  # fail now, not after an hour of training
        matcher = lr.make_matcher(args.matcher, weights=args.loftr_weights)

    def script(command: list[str], stage: str, check):
        def run() -> dict:
            run_logged(command, where.logs / f"{stage}.log")
            check()
            return {"log": str(where.logs / f"{stage}.log")}

        return command[1:], run  # settings: the arguments, not the script's path

    def select() -> dict:
        if extra > 0:
            print(f"ranking {args.num_images} completions for {extra} extra references")
        ranking = lr.rank_completions(
            completions(where.results, args.num_images),
            scene.reference_paths,
            scene.fill_mask,
            matcher or lr.make_matcher(args.matcher, weights=args.loftr_weights),
            cache=lr.PairCache(where.results / lr.CACHE_DIR_NAME),
        )
        try:
            record = lr.build_refill_scene(
                scene_dir / "ref", scene_dir / "target", where.results, ranking,
                args.target_count, where.scene,
            )  # fmt: skip
        except lr.NothingToAdd as err:
            raise StageFailed(str(err)) from None
        return {"chosen": record["chosen"], "scene": str(where.scene)}

    stages = {  # stage -> (settings that define it, what runs it)
        "train": script(
            train_command(args, scene_dir, where.model), "train",
            lambda: check_model(where.model),
        ),
        "infer": script(
            infer_command(args, scene_dir, where.model, where.results), "infer",
            lambda: completions(where.results, args.num_images),
        ),
        "select": ([args.matcher, args.loftr_weights, args.target_count], select),
        "train_refill": script(
            train_command(args, where.scene, where.model_refill), "train_refill",
            lambda: check_model(where.model_refill),
        ),
        "infer_refill": script(
            infer_command(args, where.scene, where.model_refill, where.results_refill),
            "infer_refill", lambda: completions(where.results_refill, args.num_images),
        ),
    }  # fmt: skip

    report = []
    labels = {"select": ["--matcher", "--loftr_weights", "--target_count"]}
    for number, stage in enumerate(STAGES, 1):
        settings, run = stages[stage]
        record = state.done(stage, settings, labels.get(stage))
        if record is not None:
            print(f"[{number}/{len(STAGES)}] {stage}: done earlier, skipped")
            report.append({"stage": stage, "status": "skipped", **record})
            continue
        print(f"[{number}/{len(STAGES)}] {stage} ...", flush=True)
        start = time.perf_counter()
        outcome = run()
        seconds = round(time.perf_counter() - start, 1)
        state.finish(stage, settings, seconds=seconds, **outcome)
        print(f"[{number}/{len(STAGES)}] {stage}: done in {seconds} s")
        report.append({"stage": stage, "status": "ran", "seconds": seconds, **outcome})

    summary = {
        "schema_version": SCHEMA_VERSION,
        "scene_dir": str(scene_dir),
        "scene_name": name,
        "stages": [{k: v for k, v in r.items() if k != "settings"} for r in report],
        "original_references": [p.name for p in scene.reference_paths],
        "chosen": state.data["stages"]["select"]["chosen"],
        "folders": {
            "model": str(where.model),
            "results": str(where.results),
            "refill_scene": str(where.scene),
            "model_refill": str(where.model_refill),
            "results_refill": str(where.results_refill),
        },
    }
    ru.atomic_write_json(summary, output_dir / SUMMARY_FILE)
    return summary


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=ru.HelpFormatter)
    parser.add_argument(
        "--train_data_dir",
        type=Path,
        required=True,
        help="the scene: ref/*, target/target.png, target/mask.png (only read)",
    )
    parser.add_argument(
        "--output_dir",
        type=Path,
        required=True,
        help="gets models/, results/, scenes/, logs/ and the state files",
    )
    parser.add_argument(
        "--scene_name",
        default=None,
        help="prefix of the folders, e.g. RealBench-23; default: from the path",
    )
    parser.add_argument("--pretrained_model_name_or_path", default=ru.BASE_MODEL)
    parser.add_argument("--resolution", type=int, default=ru.RESOLUTION)
    parser.add_argument("--train_batch_size", type=int, default=16, help="the paper: 16")
    parser.add_argument("--max_train_steps", type=int, default=2000, help="the paper: 2,000")
    parser.add_argument("--seed", type=int, default=0, help="training seed; image i gets seed + i")
    parser.add_argument(
        "--mixed_precision",
        choices=["no", "fp16", "bf16"],
        default=None,
        help="passed to both scripts; default: their own",
    )
    parser.add_argument(
        "--num_images",
        type=int,
        default=ru.NUM_IMAGES,
        help="completions per round; the first round's are the candidates",
    )
    parser.add_argument("--num_inference_steps", type=int, default=ru.NUM_INFERENCE_STEPS)
    parser.add_argument("--scheduler", choices=list(ru.SCHEDULERS), default=ru.SCHEDULER)
    parser.add_argument(
        "--target_count",
        type=int,
        default=TARGET_COUNT,
        help="references in the second round, originals included",
    )
    parser.add_argument(
        "--matcher",
        choices=lr.MATCHERS,
        default="loftr",
        help="loftr needs weights (--loftr_weights); sift is weight-free",
    )
    parser.add_argument(
        "--loftr_weights", default=None, help=f"local LoFTR checkpoint; also ${lr.WEIGHTS_ENV}"
    )
    parser.add_argument(
        "--train_args",
        default="",
        help="more train_realfill.py flags, one string, e.g. "
        '"--report_to none --unet_learning_rate 1e-4"',
    )
    parser.add_argument(
        "--infer_args", default="", help='more infer.py flags, one string, e.g. "--batch_size 8"'
    )
    return parser.parse_args(argv)  # fmt: skip


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        summary = run_refill(args)
    except ru.SceneError as err:
        print(f"error: {err}", file=sys.stderr)
        return ru.EXIT_INPUT
    except StageFailed as err:
        print(f"error: stage failed: {err}\nfix it and run the same command again: finished "
              "stages are kept", file=sys.stderr)  # fmt: skip
        return ru.EXIT_FAILED
    except KeyboardInterrupt:
        print("interrupted: run the same command again to continue", file=sys.stderr)
        return ru.EXIT_INTERRUPTED
    chosen = ", ".join(f"{c['image']} ({c['score']})" for c in summary["chosen"]) or "none"
    folders = summary["folders"]
    print(f"chosen as extra references: {chosen}")
    print(f"round 1: {folders['results']}\nround 2: {folders['results_refill']}")
    print(f"summary: {args.output_dir / SUMMARY_FILE}")
    return ru.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
