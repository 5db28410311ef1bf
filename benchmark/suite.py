"""The benchmark suite behind benchmarks.py: find result folders and their ground truth, run the
metric scripts in parallel over everything not cached, keep the cache, run the correspondence
ranking, and compute the seed-selection analysis.

Cache layout (under --cache_dir):
    scores/<results folder>/<METRIC>.json   {"schema_version": 1, "metric": "PSNR",
        "entries": {"0.png": {"key": "<sha256>", "value": 14.2, "resized": false}, ...}}
    file_hashes.json                        {"<abs path>": [size, mtime_ns, ctime_ns, inode,
                                                            "<sha256>"]}
    .lock                                   file lock held while a cache file is rewritten
An entry is valid only if its key matches sha256 over (gt, mask and result file contents, metric
name, metric version, metric parameters): regenerating one image invalidates only its entries.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from filelock import FileLock

from benchmark.common import METRICS, ROOT, UNAVAILABLE_EXIT, MetricSpec
from realfill_utils import (
    RANKING_TIE_BREAK,
    atomic_write_json,
    list_images,
    numbered_images,
    ranked_images,
)

CACHE_SCHEMA = 1
RANKING_FILE = "loftr_ranking_scores.json"
DROP_RATES = (0.0, 0.25, 0.5, 0.75)
# <dataset>-<scene name>-results[-variant]; a scene name is letters, digits and underscores
RESULTS_PATTERN = re.compile(r"^(RealBench|Custom)-([A-Za-z0-9_]+)-results(?:-(.+))?$")
NO_GT = "has no gt.png"  # in find_scene_dir's reason: the scene exists, only ranking can run
RANKING_SCRIPT_ENV = "REALFILL_RANKING_SCRIPT"  # another ranking script (tests, experiments)


# ---------------------------------------------------------------------------------------------
# Discovery
# ---------------------------------------------------------------------------------------------
@dataclass
class ResultFolder:
    """One results folder and the scene it completes."""

    folder: Path
    dataset: str  # "RealBench" or "Custom"
    number: str  # the scene's name: its folder name, e.g. "23" or "flowerwoman"
    variant: str  # the folder-name suffix after "-results-"; "" is the base run
    scene_dir: Path
    images: list[Path]

    @property
    def name(self) -> str:
        return self.folder.name

    @property
    def scene(self) -> str:
        return f"{self.dataset}-{self.number}"

    @property
    def gt(self) -> Path:
        return self.scene_dir / "target" / "gt.png"

    @property
    def mask(self) -> Path:
        return self.scene_dir / "target" / "mask.png"


def find_scene_dir(dataset: str, number: str, dataset_dir: Path | None) -> tuple[Path | None, str]:
    """<dir>/<dataset>/<N> or <dir>/<N> holding target/gt.png and target/mask.png; with no
    gt.png, the scene folder and a reason containing NO_GT (only the ranking can run)."""
    flag = "--realbench_dataset_dir" if dataset == "RealBench" else "--custom_dataset_dir"
    if dataset_dir is None:
        return None, f"no {flag} given"
    tried = [dataset_dir / dataset / number, dataset_dir / number]
    for scene_dir in tried:
        if scene_dir.is_dir():
            if not (scene_dir / "target" / "mask.png").is_file():
                return None, f"{scene_dir / 'target'} lacks mask.png"
            if not (scene_dir / "target" / "gt.png").is_file():
                return scene_dir, (
                    f"{scene_dir / 'target'} {NO_GT}, so no metric can score it: only the "
                    "gt-free correspondence ranking can run for it (ask with --metrics loftr)"
                )
            return scene_dir, ""
    return None, f"scene not found: tried {' and '.join(str(p) for p in tried)}"


def discover(
    results_base_dir: Path,
    dataset_dirs: dict[str, Path | None],
    num_images: int,
    ranking_only: list[ResultFolder] | None = None,
) -> tuple[list[ResultFolder], list[tuple[str, str]]]:
    """Result folders ready to evaluate, and (folder, reason) for every folder that is not.
    Complete folders whose scene has no gt.png are also appended to `ranking_only`."""
    folders, skipped = [], []
    for entry in sorted(results_base_dir.iterdir()):
        if not entry.is_dir() or entry.name.startswith("."):
            continue
        match = RESULTS_PATTERN.match(entry.name)
        if not match:
            skipped.append(
                (entry.name, "name is not RealBench-<N>-results[-variant] / Custom-<N>-results...")
            )
            continue
        dataset, number, variant = match.group(1), match.group(2), match.group(3) or ""
        scene_dir, reason = find_scene_dir(dataset, number, dataset_dirs.get(dataset))
        if scene_dir is None:
            skipped.append((entry.name, reason))
            continue
        images = numbered_images(entry)
        if len(images) < num_images:
            have = {int(p.stem) for p in images}
            missing = [f"{i}.png" for i in range(num_images) if i not in have]
            skipped.append(
                (
                    entry.name,
                    f"incomplete: {len(images)} of {num_images} images; missing "
                    f"{', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}",
                )
            )
            continue
        found = ResultFolder(entry, dataset, number, variant, scene_dir, images[:num_images])
        if reason:  # no gt.png
            skipped.append((entry.name, reason))
            if ranking_only is not None:
                ranking_only.append(found)
            continue
        folders.append(found)
    return folders, skipped


# ---------------------------------------------------------------------------------------------
# Content hashes and the score cache
# ---------------------------------------------------------------------------------------------
def sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


class HashIndex:
    """sha256 of files, remembered by (size, mtime, ctime, inode) so unchanged files are not
    re-read. The ctime and inode catch what the size and mtime miss (a file replaced by
    `cp -p` or an unpacked archive keeps the original's time); no user can set them."""

    def __init__(self, path: Path):
        self.path = path
        self.changed = False
        try:
            self.known = json.loads(path.read_text())
        except (OSError, ValueError):
            self.known = {}

    def __call__(self, file: Path) -> str:
        key = str(file.resolve())
        stat = file.stat()
        known = self.known.get(key)
        seen = [stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino]
        if isinstance(known, list) and len(known) == 5 and known[:4] == seen:
            return known[4]
        digest = sha256_file(file)
        self.known[key] = [*seen, digest]
        self.changed = True
        return digest

    def save(self, lock: CacheLock) -> None:
        """Merge into the file under the lock (another run may have added entries)."""
        if self.changed:
            with lock:
                try:
                    on_disk = json.loads(self.path.read_text())
                except (OSError, ValueError):
                    on_disk = {}
                atomic_write_json(on_disk | self.known, self.path)


class CacheLock:
    """An exclusive lock on <cache_dir>/.lock: runs sharing a cache, and the threads of one run,
    take turns writing (each thread holds its own descriptor of the lock file)."""

    def __init__(self, cache_dir: Path):
        cache_dir.mkdir(parents=True, exist_ok=True)
        self.path = cache_dir / ".lock"
        self._lock = FileLock(self.path)  # waits as long as the holder needs

    def __enter__(self):
        self._lock.acquire()
        return self

    def __exit__(self, *exc):
        self._lock.release()


def entry_key(hashes: tuple[str, str, str], spec: MetricSpec, params: dict) -> str:
    blob = json.dumps([*hashes, spec.name, spec.version, params], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def cache_file(cache_dir: Path, folder: str, metric: str) -> Path:
    return cache_dir / "scores" / folder / f"{metric}.json"


def read_cache(path: Path, problems: list[str] | None = None) -> dict:
    """Entries of one cache file; a corrupt file is reported in `problems` and counts as empty."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
        if data.get("schema_version") != CACHE_SCHEMA or not isinstance(data["entries"], dict):
            raise ValueError(f"unexpected schema_version {data.get('schema_version')!r}")
        return data["entries"]
    except (OSError, ValueError, KeyError, AttributeError, TypeError) as err:
        if problems is not None:
            problems.append(f"cache file {path} was unreadable ({err}); its scores are recomputed")
        return {}


def merge_cache(path: Path, metric: str, updates: dict, lock: CacheLock) -> None:
    """Re-read the file under the lock, add `updates`, write it atomically."""
    if not updates:
        return
    with lock:
        entries = read_cache(path)
        entries.update(updates)
        atomic_write_json(
            {"schema_version": CACHE_SCHEMA, "metric": metric, "entries": entries}, path
        )


# ---------------------------------------------------------------------------------------------
# Running the metric scripts
# ---------------------------------------------------------------------------------------------
@dataclass
class MetricRun:
    """What happened to one metric in this run."""

    status: str = "ok"  # "ok", "unavailable: <reason>", "failed: <reason>", "timed out ..."
    computed: int = 0
    cached: int = 0
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0  # wall time of the metric process(es)
    load_s: float = 0.0  # model loading, as the process reports it
    item_s: float = 0.0  # sum of the per-image times the process reports


@dataclass
class Evaluation:
    """Every score of this run: scores[(folder, metric)][image name] = value."""

    scores: dict = field(default_factory=dict)
    resized: set = field(default_factory=set)  # (folder, image) evaluated after resizing
    runs: dict[str, MetricRun] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    hashes: dict = field(default_factory=dict)  # path -> sha256, for the report's skip logic
    computed: set = field(default_factory=set)  # (folder, metric, image) scored in this run


def metric_command(spec: MetricSpec) -> list[str]:
    return [sys.executable, "-m", f"benchmark.{spec.module}"]


def evaluate(
    folders: list[ResultFolder],
    metrics: list[str],
    cache_dir: Path,
    force: set[str] = frozenset(),
    jobs: int = 2,
    timeout: float = 3600.0,
    commands: dict[str, list[str]] | None = None,
    progress: bool = True,
    slots: threading.Semaphore | None = None,
) -> Evaluation:
    """Scores of every image for every metric: from the cache where its key matches, the
    rest from one metric-script process per metric (up to `jobs` at once)."""
    ev = Evaluation()
    lock = CacheLock(cache_dir)
    hash_of = HashIndex(cache_dir / "file_hashes.json")
    pending: dict[str, list[dict]] = {m: [] for m in metrics}
    keys: dict[tuple[str, str, str], str] = {}
    for rf in folders:
        scene_hashes = (hash_of(rf.gt), hash_of(rf.mask))
        for image in rf.images:
            ev.hashes[str(image)] = hash_of(image)
        ev.hashes[str(rf.gt)], ev.hashes[str(rf.mask)] = scene_hashes
        for metric in metrics:
            spec = METRICS[metric]
            params = spec.cache_params()
            entries = read_cache(cache_file(cache_dir, rf.name, metric), ev.problems)
            scores = ev.scores.setdefault((rf.name, metric), {})
            for image in rf.images:
                key = entry_key((*scene_hashes, ev.hashes[str(image)]), spec, params)
                keys[(rf.name, metric, image.name)] = key
                entry = entries.get(image.name)
                fresh = isinstance(entry, dict) and entry.get("key") == key and "value" in entry
                if fresh and metric not in force and "all" not in force:
                    scores[image.name] = float(entry["value"])
                    if entry.get("resized"):
                        ev.resized.add((rf.name, image.name))
                else:
                    pending[metric].append(
                        {
                            "id": f"{rf.name}/{image.name}",
                            "gt": str(rf.gt),
                            "mask": str(rf.mask),
                            "result": str(image),
                        }
                    )
    hash_of.save(lock)
    for metric in metrics:
        ev.runs[metric] = MetricRun(cached=sum(len(ev.scores[(rf.name, metric)]) for rf in folders))
    todo = [m for m in metrics if pending[m]]
    if not todo:
        return _nothing_is_not_ok(ev)

    from tqdm import tqdm

    bar = tqdm(
        total=sum(len(pending[m]) for m in todo),
        desc="metrics",
        unit="img",
        disable=None if progress else True,
        leave=False,
    )
    # Metrics without a model (PSNR, SSIM) are split by scene over the free process slots;
    # a learned metric stays one process, so its model loads once.
    tasks = []
    for metric in sorted(todo, key=lambda m: METRICS[m].weights_env is None):
        work = pending[metric]
        shards = 1 if METRICS[metric].weights_env else max(1, min(jobs, len(work) // 32))
        size = math.ceil(len(work) / shards)
        tasks += [(metric, i, work[i * size : (i + 1) * size]) for i in range(shards)]
    threads = max(1, (os.cpu_count() or 1) // min(jobs, len(tasks)))
    slots = slots or threading.Semaphore(max(1, jobs))
    merge_lock = threading.Lock()

    with tempfile.TemporaryDirectory(prefix="realfill-bench-") as tmp:

        def run_one(task) -> None:
            metric, index, work = task
            spec = METRICS[metric]
            command = (commands or {}).get(metric) or metric_command(spec)
            with slots:
                shard = _run_metric(
                    spec, command, work, Path(tmp) / f"{metric}-{index}", timeout, threads, ev, bar
                )
            with merge_lock:
                run = ev.runs[metric]
                run.computed += shard.computed
                run.errors += shard.errors
                run.seconds = max(run.seconds, shard.seconds)
                run.load_s += shard.load_s
                run.item_s += shard.item_s
                if shard.status != "ok" and run.status == "ok":
                    run.status = shard.status
            merge_cache_for(metric, {job["id"] for job in work})

        def merge_cache_for(metric: str, ids: set[str]) -> None:
            by_folder: dict[str, dict] = {}
            for rf in folders:
                for image in rf.images:
                    value = ev.scores[(rf.name, metric)].get(image.name)
                    if (
                        value is not None
                        and f"{rf.name}/{image.name}" in ids
                        and (rf.name, metric, image.name) in ev.computed
                    ):
                        by_folder.setdefault(rf.name, {})[image.name] = {
                            "key": keys[(rf.name, metric, image.name)],
                            "value": value,
                            "resized": (rf.name, image.name) in ev.resized,
                        }
            for folder, updates in by_folder.items():
                merge_cache(cache_file(cache_dir, folder, metric), metric, updates, lock)

        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            for future in [pool.submit(run_one, task) for task in tasks]:
                future.result()
    bar.close()
    return _nothing_is_not_ok(ev)


def _nothing_is_not_ok(ev: Evaluation) -> Evaluation:
    """A metric that scored no image (nothing to score, or every image failed) is not "ok"."""
    for run in ev.runs.values():
        if run.status == "ok" and run.computed + run.cached == 0:
            run.status = "nothing scored" + (f" ({len(run.errors)} errors)" if run.errors else "")
    return ev


def _run_metric(spec, command, work, stem: Path, timeout, threads, ev, bar) -> MetricRun:
    """One metric process over `work`; scores go into `ev` as they stream in."""
    run = MetricRun()
    jobs_file, log_file = stem.with_suffix(".jsonl"), stem.with_suffix(".log")
    jobs_file.write_text("".join(json.dumps(j) + "\n" for j in work))
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    start = time.perf_counter()
    unavailable, timed_out, returncode = None, False, None
    with open(log_file, "w") as log:
        try:
            proc = subprocess.Popen(
                [*command, "--jobs_file", str(jobs_file)],
                cwd=ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
            )
        except OSError as err:
            run.status = f"failed: cannot start {command[0]}: {err}"
            bar.update(len(work))
            return run
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        try:
            for line in proc.stdout:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue  # stray output of some library; the protocol lines are JSON
                event = record.get("event")
                if event == "score":
                    folder, image = record["id"].rsplit("/", 1)
                    ev.scores[(folder, spec.name)][image] = float(record["value"])
                    ev.computed.add((folder, spec.name, image))
                    if record.get("resized"):
                        ev.resized.add((folder, image))
                    run.computed += 1
                    run.item_s += float(record.get("seconds", 0.0))
                    bar.update(1)
                elif event == "error":
                    run.errors.append(f"{record.get('id')}: {record.get('error')}")
                    bar.update(1)
                elif event == "ready":
                    run.load_s = float(record.get("load_s", 0.0))
                elif event == "unavailable":
                    unavailable = record.get("reason", "no reason given")
            returncode = proc.wait()
        finally:
            timed_out = not timer.is_alive() and proc.returncode not in (0, UNAVAILABLE_EXIT)
            timer.cancel()
    run.seconds = time.perf_counter() - start
    missing = len(work) - run.computed - len(run.errors)
    if unavailable is not None:
        run.status = f"unavailable: {unavailable}"
    elif timed_out and returncode != 0:
        run.status = f"timed out after {timeout:g} s ({missing} images not scored)"
    elif returncode != 0 or missing:
        tail = log_file.read_text().strip().splitlines()[-3:]
        run.status = (
            f"failed: exit status {returncode}, {missing} images not scored; "
            + " | ".join(tail)[-400:]
        )
    bar.update(max(missing, 0))
    return run


# ---------------------------------------------------------------------------------------------
# Correspondence ranking and seed selection
# ---------------------------------------------------------------------------------------------
def ranking_script() -> Path:
    return Path(os.environ.get(RANKING_SCRIPT_ENV) or ROOT / "loftr_ranking.py")


def ranking_command(rf: ResultFolder, matcher: str) -> list[str]:
    return [
        sys.executable,
        str(ranking_script()),
        "--rank-only",
        "--source-dir",
        str(rf.folder),
        "--ref-dir",
        str(rf.scene_dir / "ref"),
        "--mask",
        str(rf.mask),
        "--matcher",
        matcher,
        "--ranking-output-file",
        str(rf.folder / RANKING_FILE),
    ]


def read_ranking(rf: ResultFolder) -> list[str]:
    """Image names best first, from the ranking file; images it lacks go last."""
    data = json.loads((rf.folder / RANKING_FILE).read_text())
    if data.get("schema_version") != 1 or not isinstance(data.get("candidates"), list):
        raise ValueError(f"{rf.folder / RANKING_FILE}: not a schema_version 1 ranking file")
    order = [c["image"] for c in data["candidates"]]
    names = [p.name for p in rf.images]
    return [n for n in order if n in names] + [n for n in names if n not in order]


def ranking_scores(rf: ResultFolder) -> dict[str, float | None]:
    """image -> correspondence count from the ranking file ({} when unreadable)."""
    try:
        data = json.loads((rf.folder / RANKING_FILE).read_text())
        return {c["image"]: c.get("score") for c in data["candidates"]}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def ranking_is_current(rf: ResultFolder, matcher: str) -> bool:
    """Whether the folder's ranking file ranks exactly the images the ranking script would
    rank now (`ranked_images`), by content, against the scene's references
    and mask as they are now, with `matcher`. Compared by sha256, never by modification time: a
    copied file keeps an old time, and a machine's clock can jump."""
    try:
        data = json.loads((rf.folder / RANKING_FILE).read_text())
        refs, images = list_images(rf.scene_dir / "ref")[0], ranked_images(rf.folder)
        return (
            data["settings"]["matcher"] == matcher
            and data.get("tie_break") == RANKING_TIE_BREAK  # an older ranking orders ties by name
            and data["mask_sha256"] == sha256_file(rf.mask)
            and data["reference_sha256"] == {p.name: sha256_file(p) for p in refs}
            and {c["image"]: c["sha256"] for c in data["candidates"]}
            == {p.name: sha256_file(p) for p in images}
        )
    except (OSError, ValueError, KeyError, TypeError):  # missing, unreadable, an older format
        return False


def rank(
    folders: list[ResultFolder],
    matcher: str = "loftr",
    force: bool = False,
    jobs: int = 2,
    timeout: float = 3600.0,
    slots: threading.Semaphore | None = None,
) -> dict[str, list[str] | str]:
    """folder -> image names best first, or the reason there is no ranking. The ranking script
    runs where the ranking file is not current (`ranking_is_current`) or `force` is set. When two
    runs fail with the same message (no weights offline, say), the rest are not tried."""
    out: dict[str, list[str] | str] = {}
    todo = [rf for rf in folders if force or not ranking_is_current(rf, matcher)]
    script = ranking_script()
    if todo and not script.is_file():
        for rf in todo:
            out[rf.name] = f"ranking script {script} not found"
        todo = []
    slots = slots or threading.Semaphore(max(1, jobs))
    failures: dict[str, int] = {}

    def run_one(rf: ResultFolder) -> None:
        if not (rf.scene_dir / "ref").is_dir():
            out[rf.name] = f"no reference folder {rf.scene_dir / 'ref'}"
            return
        with slots:
            repeated = [m for m, n in failures.items() if n >= 2]
            if repeated:
                out[rf.name] = "not run: two other folders had failed the same way"
                return
            try:
                proc = subprocess.run(
                    ranking_command(rf, matcher),
                    cwd=ROOT,
                    capture_output=True,
                    text=True,
                    timeout=timeout,
                )
            except subprocess.TimeoutExpired:
                out[rf.name] = f"ranking timed out after {timeout:g} s"
                return
            if proc.returncode != 0:
                lines = proc.stderr.strip().splitlines() or ["(no message)"]
                message = f"ranking failed (exit status {proc.returncode}): {lines[-1][:400]}"
                failures[message] = failures.get(message, 0) + 1
                out[rf.name] = message

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        list(pool.map(run_one, todo))
    for rf in folders:
        if rf.name in out:
            continue
        try:
            out[rf.name] = read_ranking(rf)
        except (OSError, ValueError, KeyError, TypeError) as err:
            out[rf.name] = f"unreadable ranking: {err}"
    return out


def seed_selection(
    scores: dict[str, float], order: list[str], drop_rates=DROP_RATES
) -> dict[float, float]:
    """Mean score over the top ceil(n * (1 - drop)) ranked images, for each drop rate."""
    out = {}
    for drop in drop_rates:
        kept = order[: math.ceil(len(order) * (1 - drop))]
        values = [scores[name] for name in kept if name in scores]
        out[drop] = sum(values) / len(values) if values else math.nan
    return out
