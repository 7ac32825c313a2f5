"""Console scripts of the live call: ``sganc-send``, ``sganc-recv``, ``sganc-call`` (``sganc-signal`` lives in
:mod:`sganc_stream.rtc.signaling`).

All three run a :class:`~sganc_stream.rtc.session.Peer`; they differ only in the directions it carries. Every
option is checked, and the model, the landmark models and the encoder are loaded, before pairing starts. Errors are
one line on stderr and exit status 2 (a refused call included: a wrong token, a full room, a model mismatch, a peer
that never says hello). The call's libraries are the optional extra ``call``: each script checks for them first (even
before ``--help``) and imports the modules that need them only then, so that without them it says so in one line.
SIGTERM (``kill``, a service manager, a container stop) ends a script as it ends ``sganc-stream``
(:func:`sganc_stream.cli.sigterm_raises`): the call is closed as at its end (the peer connection, the signaling
server, the workers; a recording is finished, or removed when no frame was recorded, never left half-written), one
line ``<script>: terminated`` on stderr, exit status 143 (128 + SIGTERM).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from sganc_stream.cli import Terminated, ended_by_signal, run_command, sigterm_raises
from sganc_stream.cli.decode import load_runtime_model
from sganc_stream.cli.options import (add_encoder_arguments, add_rate_argument, add_residual_argument, add_stream_arguments, check_runtime_arguments,
                                      check_stream_arguments, stream_params_from)
from sganc_stream.errors import ArgumentParser, InputError, import_extra
from sganc_stream.onnx_runtime import ENCODER_PRECISIONS, ONNX_EXTRA, RUNTIMES
from sganc_stream.rtc.transport import DEFAULT_MAX_BUFFERED, DEFAULT_REDUNDANCY, HELLO_TIMEOUT_S, MAX_REDUNDANCY
from sganc_stream.threads import DEFAULT_THREADS

if TYPE_CHECKING:
    from sganc_stream.rtc.session import PeerOptions

CALL_MODULES = ("aiohttp", "aioice", "aiortc")  # the extra ``call`` (pyproject.toml); aiortc imports aioice
# ONNX Runtime is the fastest for each of E, T, T⁻¹ and G on one CPU thread (benchmarks/runtime_speed.py), and a
# process on it never imports torch (seconds of start-up); integer states do not depend on the runtime (the
# receiver's come from the bytes alone), so two peers on different runtimes still decode each other exactly.
DEFAULT_RUNTIME = "onnx"


def build_parser(prog: str, send: bool, receive: bool) -> argparse.ArgumentParser:
    what = {(True, False): "send your face", (False, True): "receive and show a face",
            (True, True): "two-party call: send your face and show the other's"}[(send, receive)]
    p = ArgumentParser(prog=prog, description=f"sganc-stream live call: {what} over a WebRTC data channel")
    pair = p.add_argument_group("pairing")
    pair.add_argument("--signal", metavar="URL", help="signaling server, e.g. ws://127.0.0.1:8765 (see sganc-signal)")
    pair.add_argument("--room", default="default", help="room name on the signaling server (default: default)")
    pair.add_argument("--token", default="", help="room token: the first peer sets it, the second must match")
    pair.add_argument("--serverless", choices=["offer", "answer"],
                      help="no server: print this side's SDP as one line and paste the other side's")
    pair.add_argument("--ice-server", action="append", default=[], metavar="URL",
                      help="STUN/TURN server (repeatable; none needed on a LAN)")
    pair.add_argument("--loopback", action="store_true",
                      help="offer 127.0.0.1 as the only ICE candidate (both peers on this machine; "
                           "also SGANC_RTC_LOOPBACK=1)")
    if send:
        media = p.add_argument_group("camera")
        src = media.add_mutually_exclusive_group(required=True)
        src.add_argument("--camera", metavar="DEVICE", help="OpenCV capture device: index (0) or path (/dev/video0)")
        src.add_argument("--video", type=Path, metavar="FILE", help="video file as a fake camera (looped, real time)")
        media.add_argument("--fps", type=float, help="camera frame rate to ask for (a --video plays at its own)")
        media.add_argument("--max-fps", type=float, help="send at most this many frames per second (default: all)")
        media.add_argument("--pre-aligned", action="store_true", help="frames already are aligned faces")
        media.add_argument("--landmarks", default="dlib", choices=["dlib", "fan"], help="landmark backend (default dlib)")
        coding = p.add_argument_group("coding")
        add_stream_arguments(coding)
        add_residual_argument(coding)
        add_encoder_arguments(coding)
        add_rate_argument(coding)
        transport = p.add_argument_group("transport")
        transport.add_argument("--redundancy", type=int, default=DEFAULT_REDUNDANCY, metavar="N",
                           help=f"previous frame packets carried in each frame message, 0-{MAX_REDUNDANCY}, as far as "
                                f"they fit without another SCTP chunk (default {DEFAULT_REDUNDANCY})")
        transport.add_argument("--redundancy-any-size", action="store_true",
                           help="carry them even when that adds an SCTP chunk (more frames shown under loss, about "
                                "twice the wire rate: see README)")
        transport.add_argument("--no-retransmit", action="store_true",
                           help="answer no NACKs (the hello offers no retransmission): a gap that redundancy cannot "
                                "bridge then costs a keyframe, as with peers older than the retransmission")
        media.add_argument("--paste-back", action="store_true",
                           help="self view: show your full camera frame with your decoded face pasted back "
                                "(only the face travels, so the full frame exists on the sending side only)")
        media.add_argument("--self-record", type=Path, metavar="SELF.mp4", help="record the --paste-back self view")
        transport.add_argument("--max-buffered", type=int, default=DEFAULT_MAX_BUFFERED, metavar="BYTES",
                           help=f"skip frames while this much waits in the channel (default {DEFAULT_MAX_BUFFERED})")
    out = p.add_argument_group("display")
    out.add_argument("--headless", action="store_true", help="no window (servers, tests)")
    if receive:
        out.add_argument("--record", type=Path, metavar="OUT.mp4", help="record the received frames")
    test = p.add_argument_group("testing")
    test.add_argument("--loss", type=float, default=0.0, metavar="P",
                      help="drop each message this side sends (hellos, requests, frames) with probability P")
    test.add_argument("--loss-burst", type=float, metavar="L",
                      help="mean length of loss bursts in messages (Gilbert-Elliott; default: independent losses)")
    test.add_argument("--seed", type=int, default=0, help="seed of --loss")
    test.add_argument("--hello-timeout", type=float, default=HELLO_TIMEOUT_S, metavar="S",
                      help=f"end the call when the other side sends no hello for S seconds (default {HELLO_TIMEOUT_S:g})")
    p.add_argument("--model", help="face model bundle (default: the embedded face model); both sides need the same")
    p.add_argument("--runtime", choices=RUNTIMES, default=DEFAULT_RUNTIME,
                   help="onnx: E, T, T⁻¹ and G in ONNX Runtime on the CPU, no torch import (default: 1.6–3.6× less "
                        "CPU per stage than PyTorch eager, README \"CPU runtimes\"; the graphs are exported from the model "
                        f"with torch on first use and cached; {ONNX_EXTRA}); torch: PyTorch, the reference (--device cuda)")
    if send:
        p.add_argument("--encoder-precision", choices=ENCODER_PRECISIONS,
                       help="E as exported (fp32) or quantized to int8 on first use, calibrated on faces the model "
                            "renders from its own latent prior (default: int8 with --runtime onnx, 40 %% less E time "
                            "for about 0.001 median MS-SSIM, README \"CPU runtimes\"; fp32 with torch); the bitstream "
                            "and the receiver do not depend on it")
    p.add_argument("--device", default="cpu", help="cpu or cuda (cuda needs --runtime torch; default cpu)")
    p.add_argument("--threads", type=int, default=DEFAULT_THREADS,
                   help=f"CPU threads of each network (E, T, T⁻¹, G) (default {DEFAULT_THREADS})")
    p.add_argument("--duration", type=float, help="leave after this many seconds (default: until interrupted)")
    p.add_argument("--log", type=Path, metavar="STATS.jsonl", help="write per-frame and per-second stats")
    p.add_argument("--name", default=prog, help="name in messages and logs")
    p.add_argument("--quiet", action="store_true", help="only errors on stderr")
    return p


def call_extra_missing(prog: str) -> bool:
    """True, after one line on stderr naming the extra, when the call's libraries are not installed."""
    try:
        import_extra("call", prog, *CALL_MODULES)
    except InputError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return True
    return False


def options_from(args: argparse.Namespace, send: bool, receive: bool) -> PeerOptions:
    """The peer's options, checked (all but the step preset, which needs the model)."""
    from sganc_stream.rtc.session import PeerOptions  # the call extra, checked by main

    if send:
        check_stream_arguments(args)
    check_runtime_arguments(args)
    options = PeerOptions(
        send=send, receive=receive,
        video=getattr(args, "video", None), camera=getattr(args, "camera", None), camera_fps=getattr(args, "fps", None),
        max_fps=getattr(args, "max_fps", None),
        align=not getattr(args, "pre_aligned", False), landmarks=getattr(args, "landmarks", "dlib"),
        redundancy=getattr(args, "redundancy", DEFAULT_REDUNDANCY),
        redundancy_fit=not getattr(args, "redundancy_any_size", False),
        retransmit=not getattr(args, "no_retransmit", False),
        record=getattr(args, "record", None),
        paste_back=getattr(args, "paste_back", False), self_record=getattr(args, "self_record", None),
        headless=args.headless, duration=args.duration, loss=args.loss, loss_burst=args.loss_burst, seed=args.seed,
        hello_timeout=args.hello_timeout, log=args.log, ice_servers=args.ice_server,
        max_buffered=getattr(args, "max_buffered", DEFAULT_MAX_BUFFERED), name=args.name, quiet=args.quiet)
    options.check()
    return options


class _Loading(threading.Thread):
    """``fn()`` in a daemon thread; :meth:`result` waits for it and returns its value or raises its exception.

    The model loads beside the landmark models: ONNX Runtime builds its sessions without holding the GIL (measured:
    the main thread kept running Python meanwhile) while dlib reads its 100 MB shape predictor on the main thread
    (holding the GIL), so the two overlap; the model's Python parts (reading the bundle, the tables) do not."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        super().__init__(name="sganc-load", daemon=True)
        self._fn = fn
        self._value: Any = None
        self._error: BaseException | None = None
        self.start()

    def run(self) -> None:
        try:
            self._value = self._fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the thread that waits for the result
            self._error = exc

    def result(self) -> Any:
        self.join()
        if self._error is not None:
            raise self._error
        return self._value


def _startup_step() -> tuple[float | None, float]:
    """(seconds since the process started, CPU seconds it has used so far): the CPU time is what a step costs on an
    idle machine; on a loaded one the wall time also counts the waits for a core."""
    from sganc_stream.rtc.stats import process_age

    return process_age(), time.process_time()


async def _run(args: argparse.Namespace, send: bool, receive: bool) -> dict[str, Any]:
    startup = {"python_and_imports": _startup_step()}
    from sganc_stream.rtc.loopback import enable_loopback, loopback_requested  # the call extra, checked by main
    from sganc_stream.rtc.pairing import create_signaling
    from sganc_stream.rtc.session import Peer

    startup["call_imports"] = _startup_step()
    signaling = create_signaling(signal=args.signal, room=args.room, token=args.token, serverless=args.serverless)
    options = options_from(args, send, receive)  # every option checked: no load starts for a call that cannot
    if loopback_requested(args.loopback):
        enable_loopback()
    loading = _Loading(lambda: load_runtime_model(args, encode=send))
    if send and options.align:
        from sganc_stream.face.landmarks import make_landmarks

        options = replace(options, landmarks=make_landmarks(args.landmarks))
        startup["landmark_models"] = _startup_step()
    model = loading.result()
    startup["model"] = _startup_step()
    if send:
        options = replace(options, params=stream_params_from(args, model.codec))
    peer = Peer(model, options)  # the camera and the encoder
    startup["encoder_and_camera"] = _startup_step()
    return await peer.run(signaling, startup=startup)


@contextmanager
def sigterm_cancels_loop(main: asyncio.Task[Any] | None = None) -> Iterator[None]:
    """Makes :func:`~sganc_stream.cli.sigterm_raises` safe for an asyncio event loop running in the block.

    Raised where the signal lands, :class:`~sganc_stream.cli.Terminated` would often be lost: asyncio re-raises only
    KeyboardInterrupt and SystemExit out of a task step or a callback, so another task would keep it as its exception
    and a callback's would be logged as a traceback, and the process would go on. Instead, a SIGTERM that lands while
    a loop runs on this thread cancels ``main`` (every task of that loop when ``main`` is None) at the loop's next
    step, as ``asyncio.run`` does for Ctrl-C; ``main``'s own cleanup runs (``finally`` blocks, awaited); and the
    block then raises Terminated (in place of ``main``'s CancelledError, or of its result when the signal came as it
    was ending anyway). The handler that was in place (sigterm_raises's: Terminated at once) still takes a SIGTERM that
    lands while no loop runs, while ``main`` itself is running (start-up work that blocks the loop, such as loading
    the model: raising there is safe, and the loop would not get to a cancellation before that work ends), or after
    a first one (a second SIGTERM does not wait for the cleanup). A no-op outside the main thread and when SIGTERM is
    not made to raise (its handler is not a Python function)."""
    previous = signal.getsignal(signal.SIGTERM)
    if threading.current_thread() is not threading.main_thread() or not callable(previous):
        yield
        return
    raise_at_once: Callable[[int, FrameType | None], Any] = previous
    routed: list[asyncio.AbstractEventLoop] = []

    def cancel(loop: asyncio.AbstractEventLoop) -> None:
        for task in [main] if main is not None else asyncio.all_tasks(loop):
            task.cancel()

    def route(signum: int, frame: FrameType | None) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop runs on this thread
            loop = None
        if loop is None or routed or (main is not None and asyncio.current_task(loop) is main):
            raise_at_once(signum, frame)
            return
        routed.append(loop)
        loop.call_soon_threadsafe(cancel, loop)  # also wakes the loop from its wait

    signal.signal(signal.SIGTERM, route)
    try:
        yield
    except asyncio.CancelledError:
        if routed:
            raise Terminated from None
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
    if routed:
        raise Terminated


def run_bounded(coro: Coroutine[Any, Any, dict[str, Any]], grace: float = 20.0) -> dict[str, Any]:
    """``asyncio.run`` without its unbounded wait for leftover tasks at exit (aiortc and aiohttp can leave tasks
    that never finish once their peer is gone; a call must still end when its duration is up). Under
    :func:`~sganc_stream.cli.sigterm_raises`, SIGTERM cancels ``coro`` (:func:`sigterm_cancels_loop`): the call ends
    as at its end (connection, workers and recordings closed), then Terminated is raised."""
    loop = asyncio.new_event_loop()
    try:
        main = loop.create_task(coro)
        with sigterm_cancels_loop(main):
            return loop.run_until_complete(main)
    finally:
        leftover = [t for t in asyncio.all_tasks(loop) if not t.done()]
        for t in leftover:
            t.cancel()
        if leftover:
            loop.run_until_complete(asyncio.wait(leftover, timeout=grace))
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


def main(prog: str, send: bool, receive: bool, argv: list[str] | None = None) -> int:
    """Run one peer (``send``, ``receive``: the directions it carries) until its call ends; the exit status: 0, 2 after
    a one-line error, 130 after Ctrl-C and 143 after SIGTERM (one line ``<prog>: interrupted`` / ``terminated``)."""
    if call_extra_missing(prog):
        return 2
    args = build_parser(prog, send, receive).parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    def call() -> int:
        summary = run_bounded(_run(args, send, receive))
        if not args.quiet:
            print(f"{prog}: {json.dumps(summary)}", file=sys.stderr)
        return 0

    return run_command(prog, call)


def send_main(argv: list[str] | None = None) -> int:
    """``sganc-send``: camera → align → encode → data channel."""
    return main("sganc-send", True, False, argv)


def recv_main(argv: list[str] | None = None) -> int:
    """``sganc-recv``: data channel → decode → window or recording."""
    return main("sganc-recv", False, True, argv)


def signal_main(argv: list[str] | None = None) -> int:
    """``sganc-signal``: the pairing server (:func:`sganc_stream.rtc.signaling.signal_main`), once the call extra is
    known to be installed. SIGTERM cancels the server's tasks (it closes its connections and stops listening), then
    one line ``sganc-signal: terminated``, exit status 143."""
    if call_extra_missing("sganc-signal"):
        return 2
    from sganc_stream.rtc import signaling

    try:
        with sigterm_raises(), sigterm_cancels_loop():
            return signaling.signal_main(argv)
    except Terminated:
        return ended_by_signal("sganc-signal", signal.SIGTERM)


def call_main(argv: list[str] | None = None) -> int:
    """``sganc-call``: both directions, each side sends its face and shows the other's."""
    return main("sganc-call", True, True, argv)
