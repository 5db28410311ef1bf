"""train_realfill.ipynb: committed without outputs, and run top to bottom in DEMO mode, offline,
the way CI runs it (ReFill on, outputs in a temporary folder); a second run of its stages redoes
nothing."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import nbformat
import pytest
from conftest import tree_digest
from nbclient.exceptions import CellExecutionError

ROOT = Path(__file__).resolve().parents[1]
NUM_IMAGES = 8  # completions in the DEMO run (the recipe says 16; 8 keep the test short)
NOTEBOOK = ROOT / "train_realfill.ipynb"


def read() -> nbformat.NotebookNode:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(notebook)
    return notebook


def code_cells(notebook) -> list:
    return [c for c in notebook.cells if c.cell_type == "code"]


def settings_index(notebook) -> int:
    tagged = [i for i, c in enumerate(notebook.cells) if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, "exactly one settings cell, tagged 'parameters'"
    return tagged[0]


def test_committed_without_outputs():
    for cell in code_cells(read()):
        assert cell.outputs == [], f"cell {cell.id} has outputs: clear them before committing"
        assert cell.execution_count is None, f"cell {cell.id} has an execution count"


def test_settings_cell_holds_the_paths():
    notebook = read()
    index = settings_index(notebook)
    assert index == min(i for i, c in enumerate(notebook.cells) if c.cell_type == "code")
    assert "DEMO = False" in notebook.cells[index].source
    for cell in notebook.cells[index + 1 :]:
        assert "/content" not in cell.source, f"cell {cell.id}: a Colab path below the settings"


def outputs_of(cell, kind: str) -> str:
    """The text of a cell's outputs of one MIME type ('text/plain' includes streams)."""
    parts = []
    for output in cell.outputs:
        if output.output_type == "stream" and kind == "text/plain":
            parts.append(output.text)
        elif output.output_type in ("display_data", "execute_result") and kind in output.data:
            parts.append(output.data[kind])
    return "".join(parts)


@pytest.fixture
def client(tmp_path, monkeypatch):
    """A notebook client whose kernel is this interpreter (a kernelspec of its own, so no
    other Python installed as 'python3' is picked up), with the DEMO settings injected after
    the settings cell, as papermill injects parameters."""
    from nbclient import NotebookClient

    spec = tmp_path / "jupyter" / "kernels" / "realfill-test"
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(json.dumps({"argv": argv, "language": "python"}))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")

    notebook = read()
    injected = nbformat.v4.new_code_cell(
        f"DEMO = True\nREFILL = True\nMAX_TRAIN_STEPS = 10\nNUM_IMAGES = {NUM_IMAGES}\n"
        f"OUTPUT_DIR = {str(tmp_path / 'out')!r}\n",
        metadata={"tags": ["injected-parameters"]},
    )
    notebook.cells.insert(settings_index(notebook) + 1, injected)
    return NotebookClient(
        notebook,
        kernel_name="realfill-test",
        timeout=900,  # per cell; a busy 2-core machine is slow
        resources={"metadata": {"path": str(ROOT)}},
    )


def test_demo_runs_every_cell_and_reruns_redo_nothing(client, tmp_path):
    scene = ROOT / "data" / "Custom" / "1"
    scene_before = tree_digest(scene)
    out = tmp_path / "out"
    cells = client.nb.cells
    client.reset_execution_trackers()
    with client.setup_kernel():
        for index, cell in enumerate(cells):
            client.execute_cell(cell, index)  # raises CellExecutionError if the cell fails

        # What the stages wrote.
        for model in ("Custom-1-model", "Custom-1-model-refill"):
            assert (out / "models" / model / "pytorch_lora_weights.safetensors").is_file()
        for results in ("Custom-1-results", "Custom-1-results-refill"):
            assert {p.name for p in (out / "results" / results).glob("*.png")} == {
                f"{i}.png" for i in range(NUM_IMAGES)
            }
        ranking = json.loads(
            (out / "results" / "Custom-1-results" / "loftr_ranking_scores.json").read_text()
        )
        assert len(ranking["candidates"]) == NUM_IMAGES
        selection = json.loads(
            (out / "scenes" / "Custom-1-refill" / "refill_selection.json").read_text()
        )
        assert len(selection["chosen"]) == 5 - 3  # the scene has 3 references, ReFill tops up to 5

        # What the notebook shows: the grid, the ranking table, the report and its plots.
        by_id = {c.id: c for c in cells}
        assert "image/png" in by_id["show-completions"].outputs[-1].data
        table = outputs_of(by_id["rank"], "text/markdown")
        assert table.count("\n| ") == NUM_IMAGES  # a row per completion (the header opens the text)
        report = outputs_of(by_id["benchmarks"], "text/markdown")
        assert "PSNR" in report and "Custom-1-results-refill" in report
        assert outputs_of(by_id["benchmarks"], "image/png")

        # Running the stages again redoes nothing: training and completions are kept.
        kept = {**tree_digest(out / "models"), **tree_digest(out / "results")}
        for cell_id in ("train", "infer", "refill"):
            index = next(i for i, c in enumerate(cells) if c.id == cell_id)
            client.execute_cell(cells[index], index)
        assert "already trained" in outputs_of(by_id["train"], "text/plain")
        assert "already done" in outputs_of(by_id["infer"], "text/plain")
        refill_text = outputs_of(by_id["refill"], "text/plain")
        assert "already trained" in refill_text and "already done" in refill_text
        after = {**tree_digest(out / "models"), **tree_digest(out / "results")}
        assert {k: v for k, v in after.items() if k in kept} == kept

        # The other scene sources: RealBench from its archive (already downloaded here), and
        # an upload, which needs Colab.
        data = tmp_path / "data"
        release = tmp_path / "release" / "realfill_data_release_full" / "RealBench" / "7"
        shutil.copytree(scene, release)
        shutil.make_archive(str(data / "realbench"), "zip", tmp_path / "release")
        data_index = next(i for i, c in enumerate(cells) if c.id == "data")
        for source, number in (("realbench", 7), ("upload", 99)):
            setup = nbformat.v4.new_code_cell(
                f"SCENE_SOURCE, SCENE_NUMBER, DATA = {source!r}, {number}, Path({str(data)!r})"
            )
            cells.append(setup)
            client.execute_cell(setup, len(cells) - 1)
            if source == "upload":
                with pytest.raises(CellExecutionError, match="uploads need Colab"):
                    client.execute_cell(cells[data_index], data_index)
            else:
                client.execute_cell(cells[data_index], data_index)
                unpacked = data / "realbench" / "realfill_data_release_full" / "RealBench" / "7"
                assert f"RealBench-7: {unpacked}" in outputs_of(cells[data_index], "text/plain")
    assert tree_digest(scene) == scene_before, "the example scene was written to"
