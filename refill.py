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

With --geometry, a stage after the first training fills the hole from the references by geometry
alone (warp_fill.py -> warp/<scene>-results-warp), and both rounds' completions start from that
fill and are weighed against it per pixel (infer.py --prior_image --prior_uncertainty;
docs/geometry.md).

Settings not given come from the base model's recipe (realfill_recipe.json in its folder, as
the toy model has), else from the paper's. The dataset folder is only read. A finished stage is
recorded in refill_state.json and skipped when the command is run again (an interrupted
training resumes from its last checkpoint); refill_summary.json says what was done.
`benchmarks.py --results_base_dir <output_dir>/results` compares the two rounds as variants of
one scene.

  python refill.py --train_data_dir RealBench/23 --output_dir runs/refill-23 --matcher sift

  # quick check on a tiny random model (see make_tiny_model.py)
  python refill.py --pretrained_model_name_or_path models/tiny --train_data_dir RealBench/23 \\
      --output_dir runs/tiny-refill --resolution 32 --max_train_steps 2 --num_images 4 \\
      --num_inference_steps 2 --matcher sift
"""

from __future__ import annotations

import argparse
import re
import shlex
import sys
from pathlib import Path

import loftr_ranking as lr
import realfill_utils as ru
import scene_engine as engine
from benchmark.suite import RESULTS_PATTERN
from scene_engine import Layout, StageFailed, State, scene_name  # noqa: F401  (their old home)

SCHEMA_VERSION = 1  # of refill_state.json and refill_summary.json
SCRIPT = "refill.py"  # the owner recorded in the output folder's manifest
STATE_FILE = "refill_state.json"
SUMMARY_FILE = "refill_summary.json"
STAGES = ("train", "infer", "select", "train_refill", "infer_refill")
TARGET_COUNT = engine.TARGET_COUNT


def run_refill(args) -> dict:
    """Run (or resume) the five stages; return the summary that is also written to disk."""
    scene_dir = args.train_data_dir.resolve()
    scene = ru.load_scene(scene_dir)  # every input problem surfaces now, not after training
    output_dir = args.output_dir.resolve()
    name = args.scene_name or scene_name(scene_dir)
    if args.scene_name and not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", name):  # folders
        raise ru.SceneError(
            f"--scene_name {name!r}: use letters, digits, '_', '-' and '.' only (no path)"
        )
    if not RESULTS_PATTERN.match(f"{name}-results"):
        ru.note(
            f"the results will be named {name}-results; benchmarks.py reads only "
            "RealBench-<name>-results and Custom-<name>-results (<name>: letters, digits, _), "
            "so to compare the rounds with it, pass e.g. --scene_name Custom-kitchen"
        )
    recipe = ru.Recipe.for_model(**{f: getattr(args, f) for f in RECIPE_FLAGS})
    train_extra, infer_extra = shlex.split(args.train_args), shlex.split(args.infer_args)
    # before anything is written
    engine.check_stage_args(recipe, train_extra, infer_extra, geometry=args.geometry)
    fresh = not (output_dir / STATE_FILE).is_file()
    if fresh:  # the matcher too (a LoFTR checkpoint loads), before anything is written
        lr.check_matcher(args.matcher, weights=args.loftr_weights)
    entries = ["models", "results", "scenes", "logs", "warp", STATE_FILE, SUMMARY_FILE]
    ru.claim_output_dir(output_dir, SCRIPT, entries, {"the scene": scene_dir})
    where = Layout(output_dir, name)
    state = State(output_dir / STATE_FILE, scene_dir)
    if args.target_count <= len(scene.reference_paths):
        print(f"note: the scene has {len(scene.reference_paths)} references already: the "
              "second round would add none, so it is not trained and round 1's completions "
              "stand (raise --target_count to add completions)")  # fmt: skip
    if not fresh and "select" not in state.data["stages"]:  # now, not after the training
        lr.check_matcher(args.matcher, weights=args.loftr_weights)
    n = recipe.num_images

    def train(scene_path: Path, model: Path, stage: str, **more) -> engine.Stage:
        command = engine.train_command(recipe, scene_path, model, train_extra)
        return engine.Stage(stage, command, check=lambda: engine.check_model(model), **more)

    def infer(scene_path: Path, model: Path, results: Path, stage: str) -> engine.Stage:
        command = engine.infer_command(recipe, scene_path, model, results, infer_extra)
        return engine.Stage(
            stage, command, check=lambda: engine.check_completions(results, n, record=False)
        )

    # the scene's content is an input: a changed scene is trained again, and so is all after it
    stages = [train(scene_dir, where.model, "train", inputs=[engine.scene_input(scene_dir)])]
    if args.geometry:  # the warp fill of the ORIGINAL references guides both rounds
        warp = engine.warp_command(scene_dir, where.warp, args.matcher, args.loftr_weights)
        stages.append(engine.Stage("warp", warp, check=lambda: engine.check_warp(where.warp)))
        infer_extra = [*engine.prior_flags(where.warp), *infer_extra]
    second = engine.round_one_stands(
        scene_dir,
        args.target_count,
        where.results,
        where.results_refill,
        n,
        ("train_refill", "infer_refill"),
    )
    stages += [
        infer(scene_dir, where.model, where.results, "infer"),
        engine.select_stage(scene, where, n, args.matcher, args.loftr_weights, args.target_count),
        *(second or [
            train(where.scene, where.model_refill, "train_refill"),
            infer(where.scene, where.model_refill, where.results_refill, "infer_refill"),
        ]),
    ]  # fmt: skip
    assert tuple(s.name for s in stages if s.name != "warp") == STAGES
    # the summary describes a finished run: once a stage runs again, an earlier run's summary
    # is out of date (if this run fails, none is left to mislead); it is this script's own file
    summary_file = output_dir / SUMMARY_FILE
    report = engine.run_stages(
        stages, state, where.logs, before_first=lambda: summary_file.unlink(missing_ok=True)
    )
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
            "warp": str(where.warp) if args.geometry else None,
        },
    }
    ru.atomic_write_json(summary, summary_file)
    return summary


# The recipe's fields this script has flags for; the others come from the base model's recipe
# (realfill_recipe.json in its folder) or the paper's, and --train_args / --infer_args.
RECIPE_FLAGS = ("pretrained_model_name_or_path", "resolution", "train_batch_size",
                "max_train_steps", "seed", "mixed_precision", "num_images",
                "num_inference_steps", "scheduler")  # fmt: skip
RECIPE_NOTE = "the base's recipe, else {value}"  # realfill_recipe.json in the base's folder


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
    ru.add_recipe_flags(parser, RECIPE_FLAGS, note=RECIPE_NOTE)
    parser.add_argument(
        "--target_count",
        type=ru.positive_int,
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
        "--geometry",
        action="store_true",
        help="geometry-guided completion: fill the hole from the references by geometry first "
        "(warp_fill.py, with --matcher) and guide both rounds' sampling by it",
    )
    parser.add_argument(
        "--train_args",
        default="",
        type=ru.shell_words,
        help="more train_realfill.py flags, one string, e.g. "
        '"--report_to none --unet_learning_rate 1e-4"',
    )
    parser.add_argument(
        "--infer_args",
        default="",
        type=ru.shell_words,
        help='more infer.py flags, one string, e.g. "--batch_size 8"',
    )
    return parser.parse_args(argv)  # fmt: skip


def main(argv=None) -> int:
    args = parse_args(argv)

    def refill():
        summary = run_refill(args)
        chosen = ", ".join(f"{c['image']} ({c['score']})" for c in summary["chosen"]) or "none"
        folders = summary["folders"]
        print(f"chosen as extra references: {chosen}")
        print(f"round 1: {folders['results']}\nround 2: {folders['results_refill']}")
        print(f"summary: {args.output_dir / SUMMARY_FILE}")

    return ru.run_main(
        refill,
        interrupted="interrupted: run the same command again to continue",
        failed={
            StageFailed: "error: stage failed: {err}\nfix it and run the same command "
            "again: finished stages are kept"
        },
    )


if __name__ == "__main__":
    ru.interrupt_on_sigterm()  # stops the running stage too, as Ctrl-C does
    sys.exit(main())
