"""The console scripts: one-line refusals (full room, wrong token), argument errors, serverless copy-paste pairing,
SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rtc_data import clip, micro_bundle, micro_model
from sganc_stream.cli import Terminated, sigterm_raises
from sganc_stream.rtc.cli import call_main, recv_main, run_bounded, send_main, sigterm_cancels_loop
from sganc_stream.rtc.signaling import SignalingClient, SignalingServer
from sganc_stream.video import read_frames
from test_rtc_session import ENV, LAUNCH, events, finish, spawn, wait_for


@pytest.fixture()
def full_room() -> Iterator[str]:
    """A signaling server (in a thread) whose room ``busy`` (token ``t``) already holds two peers."""
    ready, stop = threading.Event(), threading.Event()
    url: list[str] = []

    async def body() -> None:
        server = SignalingServer()
        port = await server.start("127.0.0.1", 0)
        url.append(f"ws://127.0.0.1:{port}")
        peers = [SignalingClient(url[0], "busy", "t") for _ in range(2)]
        for p in peers:
            await p.join()

        async def listen(peer: SignalingClient) -> None:  # reading answers the server's heartbeat pings
            while (await peer.recv())["type"] != "closed":
                pass

        listeners = [asyncio.create_task(listen(p)) for p in peers]
        ready.set()
        while not stop.is_set():
            await asyncio.sleep(0.05)
        for p in peers:
            await p.close()
        await asyncio.gather(*listeners, return_exceptions=True)
        await server.stop()

    thread = threading.Thread(target=lambda: asyncio.run(body()), daemon=True)
    thread.start()
    assert ready.wait(20)
    yield url[0]
    stop.set()
    thread.join(20)


def test_third_peer_and_wrong_token_are_refused(full_room: str) -> None:
    base = ["--video", clip(), "--pre-aligned", "--model", micro_model(), "--headless", "--duration", "5"]
    third = spawn("call_main", "--signal", full_room, "--room", "busy", "--token", "t", *base)
    intruder = spawn("send_main", "--signal", full_room, "--room", "busy", "--token", "guess", *base[:-3],
                     "--duration", "5")
    code, err = finish(third)
    assert code == 2 and err.strip() == ("sganc-call: error: signaling server refused to join: "
                                         "room 'busy' is full (it already holds 2 peers)")
    code, err = finish(intruder)
    assert code == 2 and err.strip() == "sganc-send: error: signaling server refused to join: wrong token for room 'busy'"


def test_argument_errors_are_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert call_main(["--video", str(clip()), "--model", str(micro_model())]) == 2
    assert capsys.readouterr().err.strip() == ("sganc-call: error: pass --signal URL (with --room and --token) "
                                               "or --serverless offer|answer")
    assert send_main(["--serverless", "offer", "--video", str(tmp_path / "none.mp4")]) == 2
    assert "video file not found" in capsys.readouterr().err
    assert recv_main(["--serverless", "answer", "--model", str(tmp_path / "none.safetensors"), "--headless"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert recv_main(["--serverless", "answer", "--model", str(tmp_path / "none.safetensors"), "--headless",
                      "--record", str(tmp_path / "call.avi")]) == 2  # the recording's format fails before the model
    assert capsys.readouterr().err.strip().startswith("sganc-recv: error: cannot write video")
    assert send_main(["--serverless", "offer", "--video", str(clip()), "--model", str(micro_model()), "--headless",
                      "--self-record", str(tmp_path / "s.mp4")]) == 2
    assert "pass --paste-back too" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        send_main(["--serverless", "offer"])  # a camera is required


@pytest.mark.parametrize("option", ["--record", "--self-record", "--log"])
def test_every_output_is_checked_before_the_model_or_pairing(option: str, capsys: pytest.CaptureFixture[str],
                                                              tmp_path: Path) -> None:
    """An output in a missing folder is one line before the model loads or the room is joined (port 9: nobody)."""
    out = tmp_path / "nodir" / ("stats.jsonl" if option == "--log" else "a.mp4")
    assert call_main(["--signal", "ws://127.0.0.1:9", "--video", str(clip()), "--model", "/nonexistent.safetensors",
                      "--headless", "--paste-back", option, str(out)]) == 2
    assert capsys.readouterr().err == f"sganc-call: error: cannot write {out}: folder {out.parent} does not exist\n"
    assert list(tmp_path.iterdir()) == []


def test_coding_options_fail_before_any_model_or_network_work(capsys: pytest.CaptureFixture[str]) -> None:
    """Validated where sganc-stream validates them (StreamParams), before the model loads or pairing starts."""
    base = ["--signal", "ws://127.0.0.1:9", "--video", str(clip()), "--model", "/nonexistent.safetensors"]
    for extra, message in ((["--g", "300"], "residual period g must be between 0 and 255, got 300"),
                           (["--keyframe-interval", "-1"], "keyframe interval must be >= 0 (0 = first frame only), got -1"),
                           (["--redundancy", "9"], "redundancy depth must be in 0..4, got 9"),
                           (["--loss", "1.5"], "loss probability must be in [0, 1), got 1.5"),
                           (["--device", "cuda"], "--runtime onnx runs on the CPU (--device cuda needs --runtime torch)"),
                           (["--runtime", "torch", "--threads", "0"], "--threads must be at least 1, got 0"),
                           (["--runtime", "torch", "--encoder-precision", "int8"],
                            "--encoder-precision int8 needs --runtime onnx (PyTorch runs E in float32)"),
                           (["--target-kbps", "0"], "target rate must be between 1 and 100000 kbit/s, got 0.0"),
                           (["--target-kbps", "20", "--step", "1"],
                            "--step and --target-kbps exclude each other: rate control chooses the step"),
                           (["--drift-damping", "1.5"], None), (["--rounding-offset", "0.7"], None)):
        assert send_main(base + extra) == 2
        err = capsys.readouterr().err.strip()
        assert err == f"sganc-send: error: {message}" if message else (err.startswith("sganc-send: error: ")
                                                                      and "\n" not in err), err


def test_a_target_rate_with_a_single_preset_model_is_one_line(capsys: pytest.CaptureFixture[str],
                                                                tmp_path: Path) -> None:
    """Rate control needs several step presets: a model with one gives one line, exit 2, before joining (port 9)."""
    one = micro_bundle(tmp_path, step_presets=(1.0,))
    assert send_main(["--signal", "ws://127.0.0.1:9", "--video", str(clip()), "--pre-aligned", "--model", str(one),
                      "--runtime", "torch", "--target-kbps", "20"]) == 2
    assert capsys.readouterr().err == ("sganc-send: error: rate control needs at least two step presets that are "
                                       "integer multiples of step 1.0 (this model's presets: 1.0)\n")


@pytest.mark.slow
def test_serverless_copy_paste_one_way(tmp_path: Path) -> None:
    """sganc-send prints its offer line, sganc-recv reads it and prints its answer line, which goes back."""
    sender = spawn("send_main", "--serverless", "offer", "--loopback", "--video", clip(), "--pre-aligned", "--model",
                   micro_model(), "--duration", "8", "--log", tmp_path / "S.jsonl", "--quiet", "--headless",
                   "--paste-back", "--self-record", tmp_path / "self.mp4", stdin=True)
    receiver = spawn("recv_main", "--serverless", "answer", "--loopback", "--model", micro_model(), "--headless",
                     "--duration", "6", "--log", tmp_path / "R.jsonl", "--quiet", stdin=True)
    assert sender.stdout and sender.stdin and receiver.stdout and receiver.stdin
    receiver.stdin.write(sender.stdout.readline())
    receiver.stdin.flush()
    sender.stdin.write(receiver.stdout.readline())
    sender.stdin.flush()
    assert finish(receiver)[0] == 0
    assert finish(sender)[0] == 0
    sent, got = events(tmp_path / "S.jsonl", "tx"), events(tmp_path / "R.jsonl", "rx")
    assert len(sent) >= 10 and len(got) >= 0.9 * len(sent)
    assert not events(tmp_path / "R.jsonl", "tx")  # one way: the receiver sends no frames
    # ONNX Runtime by default, E as its int8 graph on the sender; the receiver runs no E
    assert [(e["runtime"], e["encoder_precision"]) for e in events(tmp_path / "S.jsonl", "joined")] == [("onnx", "int8")]
    assert [(e["runtime"], e["encoder_precision"]) for e in events(tmp_path / "R.jsonl", "joined")] == [("onnx", None)]
    # --paste-back self view: one frame per coded frame; the last one may be coded as the call ends, and not sent
    assert len(sent) <= len(read_frames(tmp_path / "self.mp4")) <= len(sent) + 1


@pytest.mark.parametrize("main", ["call_main", "send_main", "recv_main", "signal_main"])
@pytest.mark.parametrize("missing", ["aiohttp", "aioice"])
def test_without_the_call_extra_each_script_is_one_line_naming_it(main: str, missing: str, tmp_path: Path) -> None:
    """As after ``pip install -e .`` without ``[call]``: a script (even ``--help``) says which extra, exit 2."""
    code = (f"import sys; sys.modules[{missing!r}] = None\n"  # what Python does for a module that is not installed
            f"from sganc_stream.rtc.cli import {main}\n"
            f"sys.exit({main}(['--help']))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    script = "sganc-" + main.removesuffix("_main")
    assert proc.returncode == 2 and proc.stdout == "" and proc.stderr == (
        f"{script}: error: {script} needs {missing}, which is not installed: pip install 'sganc-stream[call]' "
        f"(in a checkout: pip install -c requirements.lock -e '.[call]')\n")
    assert list(tmp_path.iterdir()) == []


def terminate(proc: subprocess.Popen[str], script: str, said: str = "") -> None:
    """SIGTERM ``proc``: it must end as ``sganc-stream`` does, with exit status 143 (128 + SIGTERM) and, after what
    it had ``said`` on stderr before, exactly one line ``<script>: terminated`` (no traceback, no teardown noise:
    every peer here runs ``--quiet``)."""
    proc.send_signal(signal.SIGTERM)
    code, err = finish(proc)
    assert (code, err) == (128 + signal.SIGTERM, f"{said}{script}: terminated\n"), (code, err)


def test_sigterm_ends_a_waiting_receiver_and_the_signaling_server(tmp_path: Path) -> None:
    """``sganc-signal`` (started as its entry point, ``rtc.cli.signal_main``) and a ``sganc-recv`` waiting in a room
    for a peer end on SIGTERM with one line and status 143; the receiver's call is closed as at its end first (its
    log ends with the summary) and it leaves no recording (no frame came) and no partial file."""
    server = subprocess.Popen([sys.executable, "-c", LAUNCH.format("cli", "signal_main"), "--port", "0",
                               "--duration", "120"], env=ENV, text=True, stdin=subprocess.DEVNULL,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        assert "listening on" in line, line
        receiver = spawn("recv_main", "--signal", line.split()[-1], "--room", "term", "--token", "t", "--model",
                         micro_model(), "--headless", "--quiet", "--duration", "120", "--record", tmp_path / "R.mp4",
                         "--log", tmp_path / "R.jsonl")
        try:
            wait_for(tmp_path / "R.jsonl", "joined", 1, timeout=120)  # loaded, in the room, waiting for a peer
            terminate(receiver, "sganc-recv")
        finally:
            receiver.kill()
        assert events(tmp_path / "R.jsonl", "summary")  # Peer.run's cleanup ran before the process ended
        assert [p.name for p in tmp_path.iterdir()] == ["R.jsonl"]
        terminate(server, "sganc-signal")
    finally:
        server.kill()
        server.communicate()


def test_ctrl_c_ends_a_waiting_receiver_and_the_signaling_server_with_one_line(tmp_path: Path) -> None:
    """Ctrl-C (SIGINT) ends ``sganc-recv`` and ``sganc-signal`` as it ends ``sganc-stream``: exit status 130 and exactly
    one line ``<script>: interrupted`` (they used to exit 130 silently), the call closed first (summary logged)."""
    server = spawn("signal_main", "--port", "0", "--duration", "120")
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        assert "listening on" in line, line
        receiver = spawn("recv_main", "--signal", line.split()[-1], "--room", "int", "--token", "t", "--model",
                         micro_model(), "--headless", "--quiet", "--duration", "120", "--log", tmp_path / "R.jsonl")
        try:
            wait_for(tmp_path / "R.jsonl", "joined", 1, timeout=120)
            receiver.send_signal(signal.SIGINT)
            assert finish(receiver) == (128 + signal.SIGINT, "sganc-recv: interrupted\n")
        finally:
            receiver.kill()
        assert events(tmp_path / "R.jsonl", "summary")
        server.send_signal(signal.SIGINT)
        assert finish(server) == (128 + signal.SIGINT, "sganc-signal: interrupted\n")
    finally:
        server.kill()
        server.communicate()


@pytest.mark.slow
def test_sigterm_in_a_call_finishes_both_recordings(tmp_path: Path) -> None:
    """SIGTERM each side of a one-way call while it records (the receiver the call, the sender its --paste-back self
    view): each ends with one line and status 143, and its recording is finished, holding every frame it recorded
    (not a hidden .part file, as when SIGTERM killed the process)."""
    sender = spawn("send_main", "--serverless", "offer", "--loopback", "--video", clip(), "--pre-aligned", "--model",
                   micro_model(), "--duration", "120", "--log", tmp_path / "S.jsonl", "--quiet", "--headless",
                   "--paste-back", "--self-record", tmp_path / "self.mp4", stdin=True)
    receiver = spawn("recv_main", "--serverless", "answer", "--loopback", "--model", micro_model(), "--headless",
                     "--duration", "120", "--log", tmp_path / "R.jsonl", "--record", tmp_path / "R.mp4", "--quiet",
                     stdin=True)
    try:
        assert sender.stdout and sender.stdin and receiver.stdout and receiver.stdin
        receiver.stdin.write(sender.stdout.readline())
        receiver.stdin.flush()
        sender.stdin.write(receiver.stdout.readline())
        sender.stdin.flush()
        wait_for(tmp_path / "R.jsonl", "display", 5)  # both recordings are under way
        assert any(p.name.endswith(".part.mp4") for p in tmp_path.iterdir())
        terminate(receiver, "sganc-recv", "paste the other side's offer line:\n")  # serverless pairing's prompts
        terminate(sender, "sganc-send", "paste the other side's answer line:\n")
    finally:
        receiver.kill()
        sender.kill()
    (summary,) = events(tmp_path / "R.jsonl", "summary")
    assert summary["recorded"] >= 5 and len(read_frames(tmp_path / "R.mp4")) == summary["recorded"]
    sent = events(tmp_path / "S.jsonl", "tx")
    assert events(tmp_path / "S.jsonl", "summary") and len(sent) <= len(read_frames(tmp_path / "self.mp4")) <= len(sent) + 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["R.jsonl", "R.mp4", "S.jsonl", "self.mp4"]


@pytest.mark.parametrize("runner", ["run_bounded", "asyncio.run"])
@pytest.mark.parametrize("where", ["main task", "other task", "callback", "loop wait"])
def test_sigterm_under_asyncio_raises_terminated_after_the_cleanup(runner: str, where: str) -> None:
    """In this process: wherever SIGTERM lands while the loop runs (the main task's own step, as while the model
    loads; another task's step or a callback, where asyncio keeps or logs a Terminated raised there and the call
    would go on; the loop's wait), the call's cleanup runs, awaits included, and then Terminated is raised: by
    run_bounded (sganc-send, -recv, -call; it cancels its one task) and by asyncio.run under sigterm_cancels_loop
    (sganc-signal; every task cancelled)."""
    assert threading.current_thread() is threading.main_thread()  # where Python runs signal handlers
    cleaned: list[str] = []

    def kill() -> None:
        signal.pthread_kill(threading.main_thread().ident or 0, signal.SIGTERM)

    async def call() -> dict[str, Any]:
        loop = asyncio.get_running_loop()

        async def other() -> None:
            kill()
            await asyncio.sleep(20)

        timer = threading.Timer(0.2, kill)
        others: list[asyncio.Task[None]] = []  # a reference: the loop keeps only weak ones to its tasks
        try:
            if where == "main task":
                kill()
            elif where == "other task":
                others.append(asyncio.ensure_future(other()))
            elif where == "callback":
                loop.call_soon(kill)
            else:
                timer.start()
            await asyncio.sleep(10)  # the call (not cut short: the test fails with "DID NOT RAISE")
        finally:
            await asyncio.sleep(0.01)  # the cleanup awaits, as Peer.run's does
            cleaned.append(where)
            if timer.is_alive():
                timer.join()
        return {}

    with pytest.raises(Terminated), sigterm_raises():
        if runner == "run_bounded":
            run_bounded(call(), grace=5)
        else:
            with sigterm_cancels_loop():
                asyncio.run(call())
    assert cleaned == [where]
