"""One scene, staged and resumable: train -> infer -> rank -> (ReFill: select -> train -> infer
-> rank) -> benchmarks, each stage the project's own script run as a user would type it.

refill.py, run_realbench.py, demo.py and the notebook build their stages from the pieces here:
one subprocess runner (`run_script`), one command builder per script, one State file, one stage
loop (`run_stages`), the ReFill scene builder (`build_refill_scene`) and run_realbench.py's
benchmark scene (`bench_stages`, `run_bench_scene`, its lock and status). A stage is recorded in
the State only once it has finished and been checked; run again, a recorded stage with the same
settings is skipped, one with other settings is refused (SceneError), and every stage after a
redone one is redone too.
"""

from __future__ import annotations

import codecs
import contextlib
import json
import math
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path

import loftr_ranking as lr
import realfill_utils as ru

ROOT = Path(__file__).resolve().parent
TRAIN_SCRIPT = ROOT / "train_realfill.py"
INFER_SCRIPT = ROOT / "infer.py"
RANKING_SCRIPT = ROOT / "loftr_ranking.py"
WARP_SCRIPT = ROOT / "warp_fill.py"
BENCHMARKS_SCRIPT = ROOT / "benchmarks.py"
SCHEMA_VERSION = 1  # of the state files
LOG_TAIL = 15  # lines of a failed stage's log shown on the console
TARGET_COUNT = 5  # ReFill: references in the second round, originals included (RealBench: 1-5)
SELECTION_FILE = "refill_selection.json"  # in a ReFill scene: what was chosen, from where
REFILL_PREFIX = "refill-"  # name prefix of completions copied into a ReFill scene's ref/


class StageFailed(RuntimeError):
    """A stage's script failed or left incomplete outputs; the message says where to look."""


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def scene_name(scene_dir: Path) -> str:
    """'RealBench-23' for .../RealBench/23: the name benchmarks.py expects in result folders."""
    if scene_dir.name.isdigit() and scene_dir.parent.name:
        return f"{scene_dir.parent.name}-{scene_dir.name}"
    raise ru.SceneError(
        f"{scene_dir}: cannot name the scene from its path (expected <dataset>/<number>, e.g. "
        "RealBench/23); pass --scene_name, e.g. Custom-1"
    )


class Layout:
    """Where every stage of scene `name` writes, under the output folder."""

    def __init__(self, output_dir: Path, name: str):
        self.root = output_dir
        self.model = output_dir / "models" / f"{name}-model"
        self.results = output_dir / "results" / f"{name}-results"
        self.scene = output_dir / "scenes" / f"{name}-refill"
        self.model_refill = output_dir / "models" / f"{name}-model-refill"
        self.results_refill = output_dir / "results" / f"{name}-results-refill"
        self.warp = output_dir / "warp" / f"{name}-results-warp"  # geometry: the warp fill
        self.logs = output_dir / "logs"


# ---------------------------------------------------------------------------------------------
# The one subprocess runner (and its program-agnostic core, run_command)
# ---------------------------------------------------------------------------------------------
def run_command(
    command: list, log: Path | None = None, echo: bool = False, cwd: Path | None = None, **popen
) -> int:
    """Run any program; return its exit status. `log`: its output goes there; `echo`: its output
    also comes here, to sys.stdout, as it is written (what a notebook cell shows: Jupyter does not
    show a child's own console output); neither: it shares this console. With `echo`, Ctrl-C
    reaches the program as one SIGINT (a training stops at a clean point) and is re-raised."""
    command = [str(part) for part in command]
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
    if not echo and log is None:
        return subprocess.run(command, cwd=cwd, **popen).returncode
    if not echo:
        with open(log, "w") as out:
            to_log = {"stdout": out, "stderr": subprocess.STDOUT}
            return subprocess.run(command, cwd=cwd, **to_log, **popen).returncode
    decode = codecs.getincrementaldecoder("utf-8")("replace").decode
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with (
        open(log, "w") if log else contextlib.nullcontext() as out,
        subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, start_new_session=True, **popen) as proc,
    ):  # fmt: skip
        try:
            while chunk := proc.stdout.read1(65536):
                text = decode(chunk)
                for stream in filter(None, (out, sys.stdout)):
                    stream.write(text)
                    stream.flush()
            return proc.wait()
        except KeyboardInterrupt:  # its own session: only this SIGINT reaches it
            proc.send_signal(signal.SIGINT)
            proc.wait()
            raise


def run_script(
    command: list,
    log: Path | None = None,
    tie_to_parent: bool = False,
    cwd: Path | None = None,
    echo: bool = False,
) -> None:
    """Run a project script (path + arguments) with this Python; raise StageFailed if it fails.

    `log`: its output goes there and a failure quotes the log's tail; None: it streams to the
    console. `echo`: see run_command. A script stopped by Ctrl-C raises KeyboardInterrupt here
    too. `tie_to_parent`: on Linux the script gets SIGTERM if this process dies, so no orphaned
    stage works on behind a runner's lock (run_realbench.py's scene runner). `cwd`: the script's
    working directory (default: this process's, so relative paths in `command` hold).
    """
    command = [sys.executable, *map(str, command)]
    preexec = die_with_parent if tie_to_parent and sys.platform == "linux" else None
    code = run_command(command, log, echo, cwd, preexec_fn=preexec)
    if code in (ru.EXIT_INTERRUPTED, -signal.SIGINT):
        raise KeyboardInterrupt
    if code and (log is None or echo):
        raise StageFailed(
            f"{Path(command[1]).name} exited with status {code} (its message is above)"
        )
    if code:
        tail = log.read_text(errors="replace").strip().splitlines()[-LOG_TAIL:]
        raise StageFailed(f"exit status {code}; last lines of {log}:\n  " + "\n  ".join(tail))


def die_with_parent() -> None:
    """In a child before exec: ask Linux for SIGTERM when the parent process dies."""
    import ctypes

    pr_set_pdeathsig = 1  # from <sys/prctl.h>
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


# ---------------------------------------------------------------------------------------------
# One command builder per script: what a user would type
# ---------------------------------------------------------------------------------------------
def train_command(recipe: ru.Recipe, scene_dir: Path, model_dir: Path, extra=()) -> list[str]:
    """train_realfill.py on `scene_dir` into `model_dir`, resuming an interrupted run."""
    return [
        str(TRAIN_SCRIPT), "--train_data_dir", str(scene_dir), "--output_dir", str(model_dir),
        *recipe.train_flags(), "--resume_from_checkpoint", "latest", *extra,
    ]  # fmt: skip


def infer_command(
    recipe: ru.Recipe, scene_dir: Path, model: str | Path, results_dir: Path, extra=()
) -> list[str]:
    """infer.py: recipe.num_images completions of the scene's target by `model`."""
    return [
        str(INFER_SCRIPT), "--model_path", str(model),
        "--validation_image", str(scene_dir / "target" / "target.png"),
        "--validation_mask", str(scene_dir / "target" / "mask.png"),
        "--output_dir", str(results_dir), *recipe.infer_flags(), *extra,
    ]  # fmt: skip


# What a runner sets itself in each stage's command (its inputs and outputs, which it checks
# afterwards): --train_args / --infer_args may not change these.
TRAIN_LAYOUT = ("train_data_dir", "output_dir")
INFER_LAYOUT = ("model_path", "validation_image", "validation_mask", "output_dir", "num_images")


def check_stage_args(
    recipe: ru.Recipe, train_extra=(), infer_extra=(), geometry: bool = False, on_gpu_node=False
) -> None:
    """SceneError now, not after an hour of training, if the base model is missing, the
    resolution does not fit it, or train_realfill.py / infer.py would refuse their arguments
    (the recipe's and --train_args / --infer_args; with `geometry`, the prior's flags too).
    Parses only; loads nothing. `on_gpu_node`: the stages run elsewhere (a SLURM array), so
    this machine's lack of a GPU says nothing about fp16."""
    import io

    import infer
    import train_realfill

    multiple = ru.config_size_multiple(recipe.pretrained_model_name_or_path)
    if recipe.resolution % multiple:
        raise ru.SceneError(
            f"--resolution {recipe.resolution} is not a multiple of {multiple}, which the base "
            f"model {recipe.pretrained_model_name_or_path} needs"
        )
    scene, out = Path("scene"), Path("out")
    prior = prior_flags(out / "warp") if geometry else []
    infer_layout = INFER_LAYOUT + (("prior_image", "prior_uncertainty") if geometry else ())
    for script, parse, own, extra, flag, layout in (
        ("train_realfill.py", train_realfill.parse_args, train_command(recipe, scene, out),
         list(train_extra), "--train_args", TRAIN_LAYOUT),
        ("infer.py", infer.parse_args, infer_command(recipe, scene, out, out, prior),
         list(infer_extra), "--infer_args", infer_layout),
    ):  # fmt: skip
        said = io.StringIO()
        try:
            with contextlib.redirect_stderr(said):
                parsed = parse([*own[1:], *extra])
        except SystemExit:
            reason = (said.getvalue().strip().splitlines() or ["refused"])[-1]
            raise ru.SceneError(
                f"{script} would refuse its arguments ({reason.split('error: ')[-1]}): check "
                f"{flag} and the recipe flags"
            ) from None
        try:  # what the runner itself sets must stay as it set it: it checks the outputs there
            with contextlib.redirect_stderr(io.StringIO()):
                own_parsed = parse(own[1:])
        except SystemExit:  # the recipe's own values need the extra flags: nothing to compare
            own_parsed = parsed
        moved = [d for d in layout if getattr(parsed, d) != getattr(own_parsed, d)]
        if moved:
            raise ru.SceneError(
                f"{flag} sets --{moved[0]}, which the runner sets itself for each stage: remove "
                "it" + (" and give the runner's --num_images" if moved[0] == "num_images" else "")
            )
        if parse is train_realfill.parse_args and not on_gpu_node:
            train_realfill.refuse_fp16_without_gpu(parsed)
        if parse is infer.parse_args:
            try:
                infer.check_values(parsed)
            except ru.SceneError as err:
                raise ru.SceneError(f"infer.py would refuse its arguments ({err}): check "
                                    "--infer_args and the recipe flags") from None  # fmt: skip


def warp_command(
    scene_dir: Path, warp_dir: Path, matcher: str, loftr_weights: str | None
) -> list[str]:
    """warp_fill.py: the references carried into the target by geometry (the prior)."""
    command = [
        str(WARP_SCRIPT), "--scene_dir", str(scene_dir), "--output_dir", str(warp_dir),
        "--matcher", matcher,
    ]  # fmt: skip
    if matcher == "loftr" and loftr_weights:
        command += ["--loftr_weights", str(loftr_weights)]
    return command


def prior_flags(warp_dir: Path) -> list[str]:
    """infer.py's flags for geometry-guided completion from warp_fill.py's folder."""
    return [
        "--prior_image", str(warp_dir / "0.png"),
        "--prior_uncertainty", str(warp_dir / "uncertainty.png"),
    ]  # fmt: skip


def rank_command(
    results: Path, scene_dir: Path, matcher: str, loftr_weights: str | None, *selection: str
) -> list[str]:
    """loftr_ranking.py against the ORIGINAL references (as benchmarks.py ranks); with
    `selection` flags it builds a ReFill scene instead of only ranking."""
    command = [
        str(RANKING_SCRIPT), "--source-dir", str(results), "--ref-dir", str(scene_dir / "ref"),
        "--mask", str(scene_dir / "target" / "mask.png"), "--matcher", matcher,
        *(selection or ["--rank-only"]),
    ]  # fmt: skip
    if matcher == "loftr" and loftr_weights:
        command += ["--loftr-weights", str(loftr_weights)]
    return command


def benchmark_command(
    results: Path, datasets: dict[str, str | Path], output_file: Path, cache_dir: Path, **flags
) -> list[str]:
    """benchmarks.py over the result folders in `results`; `datasets`: {"RealBench": folder of
    scene folders, "Custom": ...}; `flags`: more of its flags (num_images=16, metrics=[...])."""
    command = [str(BENCHMARKS_SCRIPT), "--results_base_dir", str(results)]
    for dataset, folder in datasets.items():
        if folder:
            command += [f"--{dataset.lower()}_dataset_dir", str(folder)]
    command += ["--cache_dir", str(cache_dir), "--output_file", str(output_file)]
    for name, value in flags.items():
        values = value if isinstance(value, list | tuple) else [value]
        command += [f"--{name}", *map(str, values)]
    return command


# ---------------------------------------------------------------------------------------------
# Checks: a stage is done only when its outputs are there
# ---------------------------------------------------------------------------------------------
def check_model(model_dir: Path) -> dict:
    for name in (ru.LORA_FILE, ru.SETTINGS_FILE):
        if not (model_dir / name).is_file():
            raise StageFailed(f"training finished without writing {model_dir / name}")
    return {}


def check_warp(warp_dir: Path) -> dict:
    """warp_fill.py wrote its fill, its uncertainty and its report; say how much it covered."""
    for name in ("0.png", "uncertainty.png", "warp_fill.json"):
        if not (warp_dir / name).is_file():
            raise StageFailed(f"warp_fill.py finished without writing {warp_dir / name}")
    report = json.loads((warp_dir / "warp_fill.json").read_text())
    return {"hole_covered_by_references": report["hole_covered_by_references"]}


def completions(results_dir: Path, num_images: int) -> list[Path]:
    paths = [results_dir / f"{i}.png" for i in range(num_images)]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise StageFailed(f"{results_dir} lacks {', '.join(missing[:5])}")
    return paths


def check_completions(results: Path, num_images: int, record: bool = True) -> dict:
    """The completions are there (and, with `record`, infer.py's completions.json)."""
    completions(results, num_images)
    if record and not (results / "completions.json").is_file():
        raise StageFailed(f"infer.py finished without writing {results}/completions.json")
    return {}


def round_one_stands(
    scene_dir: Path,
    target_count: int,
    results: Path,
    results_refill: Path,
    num_images: int,
    names: tuple[str, str],
) -> list[Stage] | None:
    """The ReFill round's training and sampling stages when that round could add nothing: the
    scene already holds `target_count` references, so the selection adds no completion and a
    second training would repeat the first on the same scene. Its training is then skipped and
    round 1's completions are copied as the round's own, keeping every stage and folder of the
    layout. `names`: the two stages' names. None when the round adds completions (run it)."""
    have = len(ru.list_images(scene_dir / "ref")[0])
    if target_count > have:
        return None
    reason = (f"the scene has {have} references, --target_count {target_count}: ReFill adds no "
              "completion, so round 1's completions stand")  # fmt: skip

    def copy() -> dict:
        files = [p.name for p in completions(results, num_images)] + ["completions.json"]
        ru.claim_output_dir(results_refill, "scene_engine.py", files, {"round 1": results})
        for name in files:
            if (results / name).is_file():
                shutil.copy2(results / name, results_refill / name)
        return {"copied_from": str(results), "reason": reason}

    return [
        Stage(names[0], call=lambda: {"skipped": reason}, inputs=[reason]),
        Stage(names[1], call=copy, inputs=[reason],
              check=lambda: check_completions(results_refill, num_images, record=False)),
    ]  # fmt: skip


def check_ranking(path: Path) -> dict:
    try:
        ranking = json.loads(path.read_text())
        scored = [c for c in ranking["candidates"] if c["error"] is None]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise StageFailed(f"{path}: no readable ranking ({err})") from None
    return {"ranked": len(scored), "best": scored[0]["image"] if scored else None}


def check_selection(scene_dir: Path) -> dict:
    try:
        return {"chosen": json.loads((scene_dir / SELECTION_FILE).read_text())["chosen"]}
    except (OSError, ValueError, KeyError) as err:
        raise StageFailed(f"{scene_dir}: no readable ReFill selection ({err})") from None


# ---------------------------------------------------------------------------------------------
# State: which stages are done, with which settings; what runs now; why the last one failed
# ---------------------------------------------------------------------------------------------
SCENE_INPUT = "scene sha256 "  # a stage input: the scene's content hash follows


def flag_of(settings: list, index: int, labels: list[str] | None = None) -> str:
    """The flag a setting belongs to: its label, or the nearest "--flag" before it."""
    if labels is not None:
        return labels[index] if index < len(labels) else "an argument"
    for item in reversed(settings[: index + 1]):
        if isinstance(item, str) and item.startswith("--"):
            return item.split("=", 1)[0]
    return "an argument"


class State:
    """A JSON file: {"schema_version": 1, "scene_dir": ..., "stages": {stage: {"settings":
    [...], "seconds": s, ...}}, "running": {...}, "failed": {...}}. A stage is in "stages" only
    once it has finished and been checked."""

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
                    f"{path.parent} holds a run of {self.data.get('scene_dir')}, not of "
                    f"{scene_dir}: choose another --output_dir"
                )

    def done(
        self, stage: str, settings: list, labels: list[str] | None = None, redo: bool = False
    ) -> dict | None:
        """The stage's record if it finished with these settings; None if it has not run, or
        if it ran with other settings and `redo` says to run it again (else: SceneError).
        `labels`: the flag of each setting, where the settings are not a flag list."""
        record = self.data["stages"].get(stage)
        if record is None:
            return None
        if record["settings"] != settings and redo:
            return None
        if record["settings"] != settings:
            old, new = record["settings"], settings
            changed = [
                f"the scene's files changed (sha256 {a[len(SCENE_INPUT) :][:12]}... -> "
                f"{b[len(SCENE_INPUT) :][:12]}...)"
                if isinstance(b, str) and b.startswith(SCENE_INPUT)
                else f"{flag_of(new, i, labels)}: {a} -> {b}"
                for i, (a, b) in enumerate(zip(old, new, strict=False))
                if a != b
            ]
            if not changed:  # one list extends the other: name what was added or dropped
                longer, verb = (old, "without") if len(old) > len(new) else (new, "with")
                tail = " ".join(map(str, longer[min(len(old), len(new)) :]))
                changed = [f"now {verb} {tail[:120]}"]
            raise ru.SceneError(
                f"{self.path.parent}: stage '{stage}' finished earlier with other settings "
                f"({'; '.join(changed[:4])}); use a new --output_dir, "
                f"or delete that stage's folder and its entry in {self.path.name} to redo it"
            )
        return record

    def start(self, stage: str, later: list[str], **running) -> None:
        for name in later:  # a redone stage makes everything after it stale
            self.data["stages"].pop(name, None)
        self.data.pop("failed", None)
        self.data["running"] = {"stage": stage, "started": now(), **running}
        ru.atomic_write_json(self.data, self.path)

    def finish(self, stage: str, settings: list, **record) -> None:
        self.data.pop("running", None)
        self.data["stages"][stage] = {"settings": settings, "finished": now(), **record}
        ru.atomic_write_json(self.data, self.path)

    def forget_settled_failure(self) -> None:
        """Drop the record of a failure whose stage is now done (a refused rerun, then the
        same command again): it describes nothing that is still wrong."""
        failed = self.data.get("failed")
        if failed and failed.get("stage") in self.data["stages"] and "running" not in self.data:
            del self.data["failed"]
            ru.atomic_write_json(self.data, self.path)

    def fail(self, stage: str, error: str, log: Path | None) -> None:
        self.data.pop("running", None)
        self.data["failed"] = {"stage": stage, "error": error, "log": str(log), "at": now()}
        ru.atomic_write_json(self.data, self.path)


@dataclass
class Stage:
    """One step of a scene: a project script run with this Python (`command`), or a Python
    call (`call`), then checked. `check` raises StageFailed or returns extra record fields."""

    name: str
    command: list[str] | None = None  # script path + arguments
    call: Callable[[], dict] | None = None
    check: Callable[[], dict | None] = dict
    inputs: list = field(default_factory=list)  # what else defines it (e.g. content hashes)
    labels: list[str] | None = None  # flag names of `inputs`, when there is no command
    before: Callable[[], None] | None = None

    @property
    def settings(self) -> list:
        return (self.command[1:] if self.command else []) + self.inputs  # not the script path


def run_stages(
    stages: list[Stage],
    state: State,
    log_dir: Path,
    tag: str = "",
    say: Callable[[str], None] = print,
    tie_to_parent: bool = False,
    until: str | None = None,
    echo: bool = False,
    redo_changed=(),
    before_first: Callable[[], None] | None = None,
    **running,
) -> list[dict]:
    """Run (or resume) `stages` in order; return one record per stage ("status": "ran" or
    "skipped"). A failure is recorded in the State and re-raised. `tag`: the scene's name in
    each line; `tie_to_parent`, `echo`: see run_script; `until`: stop after the stage of that
    name (a notebook runs one cell's stages; a redone stage still makes every later one stale);
    `redo_changed`: names of stages that are run again when their settings changed, instead of
    refused (a notebook's sampling settings; never a training, which would resume a checkpoint
    made with other settings); `before_first`: called once, before the first stage that runs;
    `running`: more fields for the State's record of the stage in progress (host, pid, GPU)."""
    report, redo = [], False
    for number, stage in enumerate(stages, 1):
        count = f"{number}/{len(stages)}"
        label = f"[{tag}] {count} {stage.name}" if tag else f"[{count}] {stage.name}"
        log = log_dir / f"{stage.name}.log" if stage.command else None
        try:
            again = stage.name in redo_changed
            record = None if redo else state.done(stage.name, stage.settings, stage.labels, again)
            if record is not None:
                say(f"{label}: done earlier, skipped")
                report.append({"stage": stage.name, "status": "skipped", **record})
                if stage.name == until:
                    break
                continue
            if not redo and before_first:
                before_first()
            redo = True  # everything after a redone stage is redone too
            state.start(stage.name, [s.name for s in stages[number - 1 :]], **running)
            say(f"{label} ..." + (f" (progress: {log})" if log and not echo else ""))
            started, start = now(), time.perf_counter()
            if stage.before:
                stage.before()
            outcome = stage.call() if stage.call else {}
            if stage.command:
                run_script(stage.command, log, tie_to_parent, echo=echo)
                command = shlex.join([sys.executable, *stage.command])
                outcome |= {"log": str(log), "command": command}
            outcome |= stage.check() or {}
        except (StageFailed, ru.SceneError) as err:
            state.fail(stage.name, str(err), log)
            raise
        seconds = round(time.perf_counter() - start, 1)
        state.finish(stage.name, stage.settings, seconds=seconds, started=started, **outcome)
        say(f"{label}: done in {seconds} s")
        report.append({"stage": stage.name, "status": "ran", "seconds": seconds, **outcome})
        if stage.name == until:
            break
    state.forget_settled_failure()
    return report


# ---------------------------------------------------------------------------------------------
# ReFill: a new scene folder = the original references + the best completions, same target
# ---------------------------------------------------------------------------------------------
class NothingToAdd(StageFailed):
    """No completion has a single correspondence with the references: a second round would
    train on nothing new."""


def choose(ranking: dict, count: int) -> list[dict]:
    """The best `count` candidates with at least one correspondence (a completion that matches
    nothing is no evidence of the scene; errors are never chosen)."""
    scored = [c for c in ranking["candidates"] if c["error"] is None and (c["score"] or 0) > 0]
    return scored[: max(0, count)]


def check_refill_scene_dir(ref_dir: Path, source_dir: Path, out: Path) -> None:
    """SceneError unless `out` may become the new scene: outside the dataset scene and the
    completions, and new, empty or a scene this step built before."""
    ref_dir, out = Path(ref_dir), Path(out)
    for folder in (ref_dir.parent, Path(source_dir)):
        if ru.overlaps(out, folder):
            raise ru.SceneError(
                f"--output-scene-dir {out} overlaps {folder}: the augmented scene must be a new "
                "folder outside the dataset scene and the completions"
            )
    if out.is_file() or (
        out.is_dir() and any(out.iterdir()) and not (out / SELECTION_FILE).is_file()
    ):
        raise ru.SceneError(
            f"{out} exists and is not a scene this step built (no {SELECTION_FILE}): move it "
            "away, or choose another folder (loftr_ranking.py: --output-scene-dir; refill.py: "
            "--output_dir)"
        )
    foreign = foreign_in_refill_scene(out) if out.is_dir() else []
    if foreign:  # the folder is rebuilt whole: a file the user put there would be lost
        raise ru.SceneError(
            f"{foreign[0]}: not written by the ReFill selection, in {out}, which is rebuilt "
            f"whole{f' ({len(foreign)} such entries)' if len(foreign) > 1 else ''}: move it out"
        )


def foreign_in_refill_scene(out: Path) -> list[Path]:
    """Entries of a scene build_refill_scene wrote that its record does not account for."""
    try:
        record = json.loads((out / SELECTION_FILE).read_text())
        refs = {*record["original_references"], *(Path(c["copied_as"]).name
                                                  for c in record["chosen"])}  # fmt: skip
        targets = {p.name for p in Path(record["target_dir"]).iterdir()}
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ru.SceneError(
            f"{out / SELECTION_FILE}: unreadable, or its scene's target folder is gone ({err}): "
            f"{out} cannot be checked before it is rebuilt; move it away"
        ) from None
    allowed = {
        "": {"ref", "target", lr.SCORES_FILE, SELECTION_FILE},
        "ref": refs,
        "target": targets,
    }
    return [
        entry
        for folder, names in allowed.items()
        if (out / folder).is_dir()
        for entry in sorted((out / folder).iterdir())
        if entry.name not in names
    ]


def build_refill_scene(
    ref_dir: Path,
    target_dir: Path,
    source_dir: Path,
    ranking: dict,
    target_count: int,
    output_scene_dir: Path,
) -> dict:
    """Write output_scene_dir = ref/ (original references + chosen completions, up to
    `target_count` references in all) + target/ (a copy), with SELECTION_FILE recording the
    choice. The folder appears in one rename; the dataset folders are only read."""
    ref_dir, target_dir, out = Path(ref_dir), Path(target_dir), Path(output_scene_dir)
    check_refill_scene_dir(ref_dir, source_dir, out)
    for name in ("target.png", "mask.png"):
        if not (target_dir / name).is_file():
            raise ru.SceneError(
                f"{target_dir / name}: missing; selection copies the scene's target folder, "
                "so --ref-dir must be the ref/ folder of a scene laid out as <scene>/ref, "
                "<scene>/target"
            )
    originals, _ = ru.list_images(ref_dir)
    wanted = target_count - len(originals)
    chosen = choose(ranking, wanted)
    if wanted > 0 and not chosen:
        raise NothingToAdd(
            f"none of the {len(ranking['candidates'])} completions in {source_dir} has a "
            "correspondence with the references, so none is evidence of the scene and a second "
            "round would train on nothing new: improve the first round (more training steps, "
            "more references) or try the other --matcher"
        )
    if 0 < len(chosen) < wanted:
        ru.note(
            f"only {len(chosen)} of the {wanted} completions asked for have correspondences "
            f"with the references; adding those {len(chosen)}"
        )
    record = {
        "schema_version": lr.SCHEMA_VERSION,
        "source_dir": str(Path(source_dir).resolve()),
        "reference_dir": str(ref_dir.resolve()),
        "target_dir": str(target_dir.resolve()),
        "target_count": target_count,
        "original_references": [p.name for p in originals],
        "chosen": [],
        "settings": ranking["settings"],
    }
    with ru.atomic_path(out, is_dir=True) as tmp:
        (tmp / "ref").mkdir()
        for path in originals:
            shutil.copyfile(path, tmp / "ref" / path.name)
        for entry in chosen:
            name = REFILL_PREFIX + entry["image"]
            shutil.copyfile(Path(source_dir) / entry["image"], tmp / "ref" / name)
            record["chosen"].append(
                {"image": entry["image"], "score": entry["score"], "copied_as": f"ref/{name}"}
            )
        shutil.copytree(target_dir, tmp / "target")
        ru.atomic_write_json(ranking, tmp / lr.SCORES_FILE)
        ru.atomic_write_json(record, tmp / SELECTION_FILE)
    return record


def select_stage(
    scene: ru.Scene, where: Layout, num_images: int, matcher: str, loftr_weights, target_count
) -> Stage:
    """ReFill's selection in this process: rank the first round's completions against the
    original references, then build the second round's scene."""

    def select() -> dict:
        ranking = lr.rank_completions(
            completions(where.results, num_images),
            scene.reference_paths,
            scene.fill_mask,
            lr.make_matcher(matcher, weights=loftr_weights),
            cache=lr.PairCache(where.results / lr.CACHE_DIR_NAME),
        )
        record = build_refill_scene(
            scene.scene_dir / "ref", scene.scene_dir / "target", where.results, ranking,
            target_count, where.scene,
        )  # fmt: skip
        return {"chosen": record["chosen"], "scene": str(where.scene)}

    return Stage(
        "select",
        call=select,
        inputs=[matcher, loftr_weights, target_count],
        labels=["--matcher", "--loftr_weights", "--target_count"],
    )


# ---------------------------------------------------------------------------------------------
# A benchmark scene: run_realbench.py's per-scene command (stages, state file, lock, status)
# ---------------------------------------------------------------------------------------------
STATE_FILE = "state.json"  # <output_dir>/runs/<scene>/state.json
LOCK_FILE = ".lock"  # <output_dir>/runs/<scene>/.lock while a runner works on the scene
EXIT_BUSY = 3  # another runner holds the scene (SLURM requeues the task); not a failure


def say(text: str, stream=None) -> None:
    """One line in one write: lines of scenes running side by side never interleave."""
    stream = stream or sys.stdout
    stream.write(text + "\n")
    stream.flush()


def scene_problem(scene_dir: Path) -> str | None:
    """Why a scene cannot be benchmarked, or None."""
    try:
        scene = ru.load_scene(scene_dir)
    except ru.SceneError as err:
        return str(err)
    if scene.gt is None:
        return (
            f"{scene_dir / 'target' / 'gt.png'}: missing; the benchmark compares every "
            "completion with the ground truth (RealBench ships one per scene)"
        )
    return None


def scene_input(scene_dir: Path) -> str:
    """A training stage's input naming the scene's content (realfill_utils.scene_sha256): a
    changed scene is a new scene, and the refusal of a rerun says so."""
    return SCENE_INPUT + ru.scene_sha256(scene_dir)


class SceneLock:
    """An exclusive lock on runs/<scene>/.lock while the scene runs, so no second runner (a
    SLURM task and a local run, say) can start the same scene. Stage scripts are tied to the
    runner (run_script's tie_to_parent): a killed runner takes its stage with it, so no
    orphaned stage keeps working on a scene whose lock is free."""

    def __init__(self, path: Path):
        from filelock import FileLock

        self.path = path
        self.lock = FileLock(path)

    def acquire(self, wait_s: float = 2.0) -> bool:
        """Take the lock, waiting up to `wait_s` (`status` takes it for an instant)."""
        from filelock import Timeout

        try:
            self.lock.acquire(timeout=wait_s)
        except Timeout:
            return False
        return True

    def release(self) -> None:
        if self.lock.is_locked:
            self.lock.release()

    @staticmethod
    def held(path: Path) -> bool:
        """Whether some process holds the lock now (False if there is no lock file)."""
        from filelock import FileLock, Timeout

        if not path.is_file():
            return False
        probe = FileLock(path)
        try:
            probe.acquire(timeout=0)
        except Timeout:
            return True
        probe.release()
        return False


def bench_stage_names(recipe: dict) -> list[str]:
    """A benchmark scene's stages, in order, for a run's stored recipe."""
    refill_stages = ["refill_select", "refill_train", "refill_infer", "refill_rank"]
    return (
        ["train"]
        + (["warp"] if recipe.get("geometry") else [])  # runs set up before it have no key
        + ["infer", "rank"]
        + (refill_stages if recipe["refill"] else [])
        + ["benchmarks"]
    )


def bench_command(config: dict, results_view: Path, output_file: Path, out: Path) -> list:
    """benchmarks.py as a run's stored config says (its datasets, metrics, matcher, images)."""
    recipe = config["recipe"]
    return benchmark_command(
        results_view, config["datasets"], output_file, out / "benchmark_cache",
        num_images=recipe["num_images"], ranking_matcher=recipe["matcher"],
        metrics=recipe["metrics"],
    )  # fmt: skip


def make_view(view: Path, folders: list[Path], names: list[str] | None = None) -> None:
    """A folder of links to `folders` (named as they are, or by `names`): what benchmarks.py
    should see, and nothing else. It is rebuilt whole each time, so anything in it other than
    such links is refused, not lost."""
    if view.is_symlink() or view.exists():
        if view.is_symlink() or not view.is_dir():
            raise ru.SceneError(f"{view}: not the folder of links this project makes; move it away")
        foreign = sorted(p for p in view.iterdir() if not p.is_symlink())
        if foreign:
            raise ru.SceneError(
                f"{foreign[0]}: not a link this project made, in {view}, a folder of links that "
                "is rebuilt whole on every run; move it out of there and run again"
            )
    with ru.atomic_path(view, is_dir=True) as tmp:
        for folder, name in zip(folders, names or [f.name for f in folders], strict=True):
            (tmp / name).symlink_to(folder, target_is_directory=True)


def check_benchmarks(scores: Path, folders: list[Path], num_images: int) -> dict:
    """The scene's scores are all there and no metric failed; returns its means."""
    from benchmark.realbench_report import selection_means

    try:
        data = json.loads(scores.read_text())
    except (OSError, ValueError) as err:
        raise StageFailed(f"{scores}: unreadable ({err})") from None
    statuses = {m: v["status"] for m, v in data["metrics"].items()}
    bad = [f"{m}: {s}" for m, s in statuses.items() if s.startswith(("failed", "timed out"))]
    if bad:
        raise StageFailed("; ".join(bad))
    for folder in folders:
        if sum(r["folder"] == folder.name for r in data["scores"]) < num_images:
            raise StageFailed(f"benchmarks.py did not score {folder.name}; see the log")
    means = {
        variant: {m: None if v is None or math.isnan(v) else v for m, v in t["means"][0.0].items()}
        for (_, variant), t in selection_means(data["scores"], list(statuses)).items()
    }
    return {"metrics": statuses, "means": means}


def scene_stages(
    recipe: ru.Recipe,
    scene_dir: Path,
    where: Layout,
    matcher: str,
    loftr_weights: str | None = None,
    refill: bool = False,
    target_count: int = TARGET_COUNT,
    train_extra=(),
    infer_extra=(),
    geometry: bool = False,
) -> list[Stage]:
    """train -> infer -> rank, and with `refill` the ReFill round (refill_select -> refill_train
    -> refill_infer -> refill_rank), each a project script as a user would type it. The training
    stage records the scene's content hash: a changed scene is not mistaken for a trained one.
    With `geometry`, a stage after the training (warp) fills the hole from the ORIGINAL references
    by geometry (warp_fill.py) and both rounds' completions are guided by it (infer.py --prior_image
    --prior_uncertainty: docs/geometry.md)."""
    n = recipe.num_images
    if geometry:
        infer_extra = [*prior_flags(where.warp), *infer_extra]

    def train(scene_path: Path, model: Path, stage: str, **more) -> Stage:
        command = train_command(recipe, scene_path, model, train_extra)
        return Stage(stage, command, check=lambda: check_model(model), **more)

    def infer(scene_path: Path, model: Path, results: Path, stage: str) -> Stage:
        command = infer_command(recipe, scene_path, model, results, infer_extra)
        return Stage(stage, command, check=lambda: check_completions(results, n))

    def rank(results: Path, stage: str, *selection: str, check=None) -> Stage:
        command = rank_command(results, scene_dir, matcher, loftr_weights, *selection)
        ranking = results / lr.SCORES_FILE
        return Stage(stage, command, check=check or (lambda: check_ranking(ranking)))

    warp = warp_command(scene_dir, where.warp, matcher, loftr_weights)
    stages = [
        train(scene_dir, where.model, "train",
              inputs=[scene_input(scene_dir)]),
        # after the training it does not need: turning geometry on later redoes no training
        *([Stage("warp", warp, check=lambda: check_warp(where.warp))] if geometry else []),
        infer(scene_dir, where.model, where.results, "infer"),
        rank(where.results, "rank"),
    ]  # fmt: skip
    if refill:
        selection = ["--target-count", str(target_count), "--output-scene-dir", str(where.scene)]
        second = round_one_stands(scene_dir, target_count, where.results, where.results_refill,
                                  n, ("refill_train", "refill_infer"))  # fmt: skip
        stages += [
            rank(where.results, "refill_select", *selection,
                 check=lambda: check_selection(where.scene)),
            *(second or [
                train(where.scene, where.model_refill, "refill_train"),
                infer(where.scene, where.model_refill, where.results_refill, "refill_infer"),
            ]),
            rank(where.results_refill, "refill_rank"),
        ]  # fmt: skip
    return stages


def bench_stages(config: dict, scene: dict, out: Path) -> list[Stage]:
    """A benchmark scene's stages, in order: scene_stages, then benchmarks.py on its results;
    `config`: the run's realbench_run.json, `scene`: its entry for this scene."""
    recipe, name = config["recipe"], scene["name"]
    scene_dir = Path(scene["scene_dir"])
    problem = scene_problem(scene_dir)
    if problem:
        raise ru.SceneError(problem)
    known = {f.name for f in fields(ru.Recipe)}
    training = ru.Recipe.for_model(**{k: v for k, v in recipe.items() if k in known})
    where = Layout(out, name)
    stages = scene_stages(
        training, scene_dir, where, recipe["matcher"], recipe["loftr_weights"],
        recipe["refill"], recipe["target_count"],
        shlex.split(recipe["train_args"]), shlex.split(recipe["infer_args"]),
        geometry=recipe.get("geometry", False),
    )  # fmt: skip
    folders = [where.results] + ([where.results_refill] if recipe["refill"] else [])
    bench = out / "runs" / name / "benchmark"
    num_images = training.num_images
    stages.append(
        Stage(
            "benchmarks",
            bench_command(config, bench / "results", bench / "report.txt", out),
            check=lambda: check_benchmarks(bench / "report_scores.json", folders, num_images),
            before=lambda: make_view(bench / "results", folders),
        )
    )
    assert [s.name for s in stages] == bench_stage_names(recipe)
    return stages


def run_bench_scene(out: Path, config: dict, index: int) -> int:
    """Run (or resume) scene `index` of a run's config; returns the exit status (0 = every
    stage done, EXIT_BUSY = another runner has it)."""
    scene = config["scenes"][index]
    name = scene["name"]
    run_dir = out / "runs" / name
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = SceneLock(run_dir / LOCK_FILE)
    if not lock.acquire():
        say(f"[{name}] another process is running this scene; not started", sys.stderr)
        return EXIT_BUSY
    try:
        state = State(run_dir / STATE_FILE, Path(scene["scene_dir"]))
        state.data["scene"] = name
        try:
            stages = bench_stages(config, scene, out)
        except ru.SceneError as err:
            state.fail("setup", str(err), None)
            say(f"[{name}] FAILED at setup: {err}", sys.stderr)
            return ru.EXIT_INPUT
        try:
            run_stages(
                stages, state, run_dir / "logs", tag=name, say=say, tie_to_parent=True,
                host=socket.gethostname(), pid=os.getpid(),
                gpu=os.environ.get("CUDA_VISIBLE_DEVICES"),
            )  # fmt: skip
        except (StageFailed, ru.SceneError) as err:
            say(f"[{name}] FAILED at {state.data['failed']['stage']}: {err}", sys.stderr)
            return ru.EXIT_FAILED if isinstance(err, StageFailed) else ru.EXIT_INPUT
        except KeyboardInterrupt:
            stage = state.data.get("running", {}).get("stage", "setup")
            say(f"[{name}] interrupted at {stage}; run again to resume", sys.stderr)
            return ru.EXIT_INTERRUPTED
        say(f"[{name}] done")
        return ru.EXIT_OK
    finally:
        lock.release()


def read_state(path: Path) -> dict:
    """A state file's content; {} if it is missing or unreadable (status never fails)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def bench_scene_status(run_dir: Path, recipe: dict) -> dict:
    """{"status": done|running|failed|stopped|pending, "stage", "done", "hours", "detail"} of
    the benchmark scene in `run_dir`, from its state file and lock."""
    from benchmark.report import fmt

    state = read_state(run_dir / STATE_FILE)
    stages = bench_stage_names(recipe)
    records = state.get("stages", {})
    finished = [s for s in stages if s in records]
    hours = sum(r.get("seconds", 0) for r in records.values()) / 3600
    row = {"status": "pending", "stage": "-", "done": len(finished), "hours": hours, "detail": ""}
    if SceneLock.held(run_dir / LOCK_FILE):
        running = state.get("running", {})
        next_stage = stages[min(len(finished), len(stages) - 1)]
        row |= {"status": "running", "stage": running.get("stage", next_stage)}
        if running:
            row["detail"] = (
                f"since {running['started'][11:16]} UTC on {running['host']} "
                f"(pid {running['pid']}, GPU {running.get('gpu') or '-'})"
            )
    elif "failed" in state:
        failed = state["failed"]
        lines = [line.strip() for line in failed["error"].splitlines() if line.strip()]
        row |= {"status": "failed", "stage": failed["stage"], "detail": lines[-1] if lines else ""}
    elif len(finished) == len(stages):
        base = records["benchmarks"].get("means", {}).get("base", {})
        shown = [m for m in recipe["metrics"] if base.get(m) is not None][:3]
        row |= {"status": "done", "detail": "  ".join(f"{m} {fmt(base[m], m)}" for m in shown)}
    elif "running" in state or finished:
        at = state.get("running", {}).get("stage") or stages[len(finished)]
        row |= {"status": "stopped", "stage": at, "detail": "killed or interrupted; run again"}
    return row
