"""Engines (sganc_stream.engine): option checks, the missing-Ray error, and a local 2-CPU Ray cluster that must
give the same .sgnc bytes as the local engine, resume, report bad clips, and retry a clip whose worker is killed."""

from __future__ import annotations

import csv
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from face_data import CLIPS, STEADY_CLIP, shared_path
from pipeline_data import tiny_bundle
from sganc_stream import engine
from sganc_stream.cli import main
from sganc_stream.dataset import transcode_dataset
from sganc_stream.engine import RAY_EXTRA, EngineOptions, Failed, open_pool
from sganc_stream.errors import InputError
from sganc_stream.latent.codec import StreamParams
from sganc_stream.pipeline import FaceModel, TranscodeOptions, load_face_model

OTHER_CLIP = "dreamtalk_mead/M030_front_happy_level3_001.mp4"


@pytest.fixture(scope="module")
def model() -> FaceModel:
    return load_face_model(tiny_bundle())


@pytest.mark.parametrize("kwargs, message", [
    ({"engine": "spark"}, "unknown engine"),
    ({"workers": 2}, "--workers only apply to --engine ray"),
    ({"engine": "ray", "workers": 0}, "--workers must be at least 1"),
    ({"engine": "ray", "cpus_per_worker": 0}, "--cpus-per-worker must be > 0"),
    ({"engine": "ray", "device": "cuda"}, "needs --gpus-per-worker > 0"),
    ({"engine": "ray", "gpus_per_worker": 0.5}, "needs --device cuda"),
])
def test_engine_options_are_checked(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(InputError, match=message):
        EngineOptions(**kwargs)


def test_missing_ray_is_one_line_naming_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # what Python does for a module that is not installed
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.mp4").symlink_to(shared_path(CLIPS, STEADY_CLIP))
    rc = main(["transcode-dataset", "--model", str(tiny_bundle()), "--engine", "ray", "--quiet",
               str(tmp_path / "in"), str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and RAY_EXTRA in err[0]
    assert not (tmp_path / "out" / "a.sgnc").exists()


def test_cli_refuses_ray_options_with_the_local_engine(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["transcode-dataset", "--model", str(tiny_bundle()), "--workers", "2", str(tmp_path),
               str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err == ["sganc-stream transcode-dataset: error: --workers only apply to --engine ray"]


def test_an_interrupted_run_leaves_current_tables(model: FaceModel, tmp_path: Path) -> None:
    """Ctrl-C after the first clip: that clip is done in clips.csv and summary.json, the other still pending."""
    root = tmp_path / "in"
    root.mkdir()
    for name in ("a.mp4", "b.mp4"):
        (root / name).symlink_to(shared_path(CLIPS, STEADY_CLIP))
    options = TranscodeOptions(params=StreamParams("open", 10, 1, 0), max_frames=2, progress=False)

    def interrupt(clip: Any, status: str) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        transcode_dataset(model, root, tmp_path / "out", "folder", options, on_clip=interrupt)
    assert _statuses(tmp_path / "out") == {"a": "done", "b": "pending"}
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["done"] == 1 and summary["pending"] == 1 and summary["frames"] == 2
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.report.json", "a.sgnc", "clips.csv",
                                                                     "summary.json"]


# ----------------------------------------------------------------------------------------------------
# A local Ray instance with 2 CPUs


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[Any]:
    ray = pytest.importorskip("ray", reason=f"Ray is not installed ({RAY_EXTRA})")
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    except Exception as exc:  # noqa: BLE001 - any failure to start means: cannot test here
        pytest.skip(f"a local Ray instance cannot start here: {type(exc).__name__}: {exc}")
    # the kill test's work function lives in this module, which Ray workers cannot import: ship it by value
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield ray
    ray.shutdown()


def _tree(root: Path) -> None:
    """Three real clips in two folders and one file that is not a video."""
    steady, other = shared_path(CLIPS, STEADY_CLIP), shared_path(CLIPS, OTHER_CLIP)
    for name, target in (("a/steady.mp4", steady), ("a/other.mp4", other), ("b/c/steady2.mp4", steady)):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).symlink_to(target)
    (root / "b/broken.mp4").write_text("not a video")


def _statuses(out: Path) -> dict[str, str]:
    return {r["clip"]: r["status"] for r in csv.DictReader((out / "clips.csv").open())}


def test_ray_gives_the_local_bytes_resumes_and_reports_bad_clips(model: FaceModel, ray_cluster: Any,
                                                                  tmp_path: Path) -> None:
    root = tmp_path / "in"
    _tree(root)
    options = TranscodeOptions(params=StreamParams("open", 2, 1, 0), max_frames=3, progress=False)
    ray_engine = EngineOptions("ray", workers=2, cpus_per_worker=1)  # 1 torch thread per worker
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # coded bytes depend on torch's thread count: the same as the workers'
    try:
        local = transcode_dataset(model, root, tmp_path / "local", "folder", options)
    finally:
        torch.set_num_threads(threads)
    seen: list[tuple[str, str]] = []
    summary = transcode_dataset(model, root, tmp_path / "ray", "folder", options, engine=ray_engine,
                                on_clip=lambda c, s: seen.append((c.rel, s.split(":")[0])))

    done = ["a/other", "a/steady", "b/c/steady2"]
    assert sorted(seen) == [("a/other", "done"), ("a/steady", "done"), ("b/broken", "failed"),
                            ("b/c/steady2", "done")]
    for rel in done:
        data = (tmp_path / "ray" / f"{rel}.sgnc").read_bytes()
        assert data == (tmp_path / "local" / f"{rel}.sgnc").read_bytes() and len(data) > 0
        report = json.loads((tmp_path / "ray" / f"{rel}.report.json").read_text())
        assert report["bytes"] == len(data) and report["outputs"]["sgnc"] == str(tmp_path / "ray" / f"{rel}.sgnc")
        assert report["speed"]["torch_threads"] == 1
    assert (tmp_path / "ray" / "a/steady.sgnc").read_bytes() == (tmp_path / "ray" / "b/c/steady2.sgnc").read_bytes()
    assert not (tmp_path / "ray" / "b/broken.sgnc").exists()
    on_disk = json.loads((tmp_path / "ray" / "summary.json").read_text())
    assert on_disk["done"] == local["done"] == 3 and on_disk["failed"] == 1
    assert list(on_disk["errors"]) == ["b/broken"] and on_disk["errors"]["b/broken"].startswith("cannot read video")
    assert on_disk["bytes"] == local["bytes"] == summary["bytes"] and on_disk["frames"] == 9
    assert _statuses(tmp_path / "ray") == _statuses(tmp_path / "local") == {
        "a/other": "done", "a/steady": "done", "b/broken": "failed", "b/c/steady2": "done"}

    # resumed: the three finished clips are skipped, the bad one is tried again (and fails again)
    before = {rel: (tmp_path / "ray" / f"{rel}.report.json").stat().st_mtime_ns for rel in done}
    seen.clear()
    again = transcode_dataset(model, root, tmp_path / "ray", "folder", options, engine=ray_engine,
                              on_clip=lambda c, s: seen.append((c.rel, s.split(":")[0])))
    assert seen == [("a/other", "skipped"), ("a/steady", "skipped"), ("b/c/steady2", "skipped"),
                    ("b/broken", "failed")]
    assert again["this_run"] == {"done": 0, "skipped": 3, "failed": 1} and again["done"] == 3
    assert {rel: (tmp_path / "ray" / f"{rel}.report.json").stat().st_mtime_ns for rel in done} == before


def _identity(model: FaceModel) -> FaceModel:
    return model


def _dies_on_marked_items(model: FaceModel, item: tuple[int, str, str]) -> tuple[int, int, str]:
    """Item (n, mode, marker file): 'once' kills its own worker process with SIGKILL mid-item on its first try,
    'always' on every try; otherwise (and on the retry of 'once') returns (n, pid, model id)."""
    n, mode, marker = item
    time.sleep(0.2)  # mid-item: the worker is busy when it dies
    if mode == "always" or (mode == "once" and not Path(marker).exists()):
        Path(marker).write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)
    return n, os.getpid(), model.model_id


def test_a_killed_worker_has_its_item_retried_and_a_second_death_is_reported(model: FaceModel, ray_cluster: Any,
                                                                              tmp_path: Path) -> None:
    items = [(0, "ok", ""), (1, "once", str(tmp_path / "once")), (2, "ok", ""), (3, "always", str(tmp_path / "always")),
             (4, "ok", "")]
    with open_pool(EngineOptions("ray", workers=2), model, _identity) as pool:
        results = dict(pool.map(_dies_on_marked_items, items))
    assert sorted(results) == [0, 1, 2, 3, 4]
    for n in (0, 1, 2, 4):
        assert results[n][0] == n and results[n][2] == model.model_id  # each worker loaded the driver's model
    killed = int((tmp_path / "once").read_text())
    assert results[1][1] != killed  # retried on another (live) worker process
    failed = results[3]
    assert isinstance(failed, Failed) and failed.attempts == 2 and "died 2 times" in failed.error


def test_workers_waiting_for_resources_are_reported(model: FaceModel, ray_cluster: Any, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker that cannot be placed (another actor holds a CPU it needs) is reported once, then the run goes on
    when the CPU is freed."""
    ray = ray_cluster
    monkeypatch.setattr(engine, "START_NOTE_S", 1.0)

    @ray.remote(num_cpus=1)
    class Holder:
        def ping(self) -> int:
            return 1

    holder = Holder.remote()
    ray.get(holder.ping.remote())
    notes: list[str] = []

    class FreeTheCpu(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            notes.append(record.getMessage())
            ray.kill(holder)

    handler = FreeTheCpu()
    engine.log.addHandler(handler)
    try:
        with open_pool(EngineOptions("ray", workers=1, cpus_per_worker=2), model, _identity) as pool:
            results = dict(pool.map(_dies_on_marked_items, [(7, "ok", "")]))
    finally:
        engine.log.removeHandler(handler)
    assert notes == ["no Ray worker has started after 1 s: the cluster has 1 of 2 CPUs and 0 of 0 GPUs free; "
                     "workers wait for them"]
    assert results[0][0] == 7
