"""Signaling: pair two peers and relay their SDP, through a small aiohttp server or by copy-paste.

Server protocol (JSON text messages over one WebSocket at ``/ws``):

- client → server, first message: ``{"type": "join", "room": R, "token": T}``. The first peer in a room sets its
  token; a later peer must present the same one. A wrong token or a third peer is answered
  ``{"type": "refused", "reason": ...}`` (one line, shown to the user) and the socket is closed.
- server → client: ``{"type": "joined", "room": R, "peers": n}``; when a second peer arrives, the one already
  there gets ``{"type": "peer-joined"}`` and makes the offer; when a peer leaves (or its process dies and the
  socket drops) the other gets ``{"type": "peer-left"}`` and waits for the next one. A room lives while it has
  a peer in it.
- anything else (``offer``, ``answer``) is relayed verbatim to the other peer of the room.

aiortc gathers all ICE candidates before it finishes ``setLocalDescription``, so one offer and one answer
carry everything: no trickle ICE. Serverless mode prints the local description as one line (base64 of the
JSON) and reads the other side's line from stdin.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import logging
import re
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

import aiohttp
from aiohttp import web
from aiortc import RTCSessionDescription, sdp

from sganc_stream.cli import ended_by_signal
from sganc_stream.errors import ArgumentParser, InputError, SgancError

log = logging.getLogger(__name__)

NAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
TOKEN_RE = re.compile(r"^[\x21-\x7e]{0,128}$")
MAX_MESSAGE = 64 * 1024  # an aiortc SDP with a few candidates is ~1-2 kB
ROOM_SIZE = 2
SHUTDOWN_S = 2.0  # at most this long for open requests when the server stops (its peer sockets are closed first)


class SignalingError(SgancError):
    """Pairing failed: refused by the server, server unreachable, or a malformed description."""


@dataclass
class Room:
    token: str
    peers: list[web.WebSocketResponse] = field(default_factory=list)


class SignalingServer:
    """Rooms of at most two peers, each room guarded by the token of its first peer."""

    def __init__(self) -> None:
        self.rooms: dict[str, Room] = {}
        self.app = web.Application()
        self.app.router.add_get("/ws", self._ws)
        self.app.router.add_get("/", self._index)
        self.app.on_shutdown.append(self._close_sockets)
        self._sockets: set[web.WebSocketResponse] = set()
        self._runner: web.AppRunner | None = None
        self.port: int | None = None

    async def _index(self, request: web.Request) -> web.Response:
        return web.Response(text=f"sganc-signal: {len(self.rooms)} room(s) open\n")

    def _admit(self, room: str, token: str) -> str | None:
        """The refusal reason, or None when the peer may join."""
        if not NAME_RE.match(room):
            return "room names are 1-64 characters from A-Z a-z 0-9 _ . -"
        if not TOKEN_RE.match(token):
            return "tokens are at most 128 printable ASCII characters without spaces"
        existing = self.rooms.get(room)
        if existing is None:
            return None
        if existing.token != token:
            return f"wrong token for room {room!r}"
        if len(existing.peers) >= ROOM_SIZE:
            return f"room {room!r} is full (it already holds {ROOM_SIZE} peers)"
        return None

    async def _ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=MAX_MESSAGE, heartbeat=5.0)
        await ws.prepare(request)
        self._sockets.add(ws)
        try:
            return await self._serve_peer(ws)
        finally:
            self._sockets.discard(ws)

    async def _close_sockets(self, app: web.Application) -> None:
        """On shutdown, close every peer's socket (RFC 6455 code 1001, going away): the peers hear "signaling went
        away" at once and the server stops without waiting for them (aiohttp's graceful-shutdown pattern)."""
        for ws in list(self._sockets):
            await ws.close(code=aiohttp.WSCloseCode.GOING_AWAY, message=b"server shutting down")

    async def _serve_peer(self, ws: web.WebSocketResponse) -> web.WebSocketResponse:
        try:
            room_name, token = parse_join(await ws.receive_str(timeout=10.0))
        except (TimeoutError, TypeError, SignalingError):
            await ws.send_json({"type": "refused", "reason": "expected a join message first"})
            await ws.close()
            return ws
        reason = self._admit(room_name, token)
        if reason is not None:
            log.info("refused a peer: %s", reason)
            await ws.send_json({"type": "refused", "reason": reason})
            await ws.close()
            return ws
        room = self.rooms.setdefault(room_name, Room(token))
        room.peers.append(ws)
        log.info("room %s: %d peer(s)", room_name, len(room.peers))
        await ws.send_json({"type": "joined", "room": room_name, "peers": len(room.peers)})
        for other in room.peers:
            if other is not ws:
                await other.send_json({"type": "peer-joined"})
        try:
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    break
                for other in room.peers:
                    if other is not ws and not other.closed:
                        await other.send_str(msg.data)
        finally:
            room.peers.remove(ws)
            log.info("room %s: a peer left, %d remain", room_name, len(room.peers))
            for other in room.peers:
                if not other.closed:
                    await other.send_json({"type": "peer-left"})
            if not room.peers:
                del self.rooms[room_name]
        return ws

    async def start(self, host: str = "127.0.0.1", port: int = 8765) -> int:
        """Listen; returns the bound port (pass 0 for any free one)."""
        self._runner = web.AppRunner(self.app, access_log=None, shutdown_timeout=SHUTDOWN_S)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


class SignalingClient:
    """One peer's connection to the server: ``join`` then ``recv`` / ``send`` JSON messages."""

    def __init__(self, url: str, room: str, token: str) -> None:
        self.url, self.room, self.token = url.rstrip("/"), room, token
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None

    async def join(self) -> dict[str, Any]:
        """Connect and join; SignalingError with the server's one-line reason when refused."""
        url = self.url if self.url.endswith("/ws") else f"{self.url}/ws"
        self._session = aiohttp.ClientSession()
        try:
            self._ws = await self._session.ws_connect(url, max_msg_size=MAX_MESSAGE, heartbeat=5.0)
        except (aiohttp.ClientError, OSError) as exc:
            await self.close()
            raise SignalingError(f"cannot reach signaling server {url}: {exc}") from None
        await self.send({"type": "join", "room": self.room, "token": self.token})
        reply = await self.recv()
        if reply.get("type") == "refused":
            await self.close()
            raise SignalingError(f"signaling server refused to join: {reply.get('reason')}")
        if reply.get("type") != "joined":
            await self.close()
            raise SignalingError(f"unexpected reply from signaling server: {reply.get('type')!r}")
        return reply

    async def send(self, message: dict[str, Any]) -> None:
        assert self._ws is not None
        await self._ws.send_json(message)

    async def recv(self) -> dict[str, Any]:
        """The next message; ``{"type": "closed"}`` once the server has gone."""
        assert self._ws is not None
        msg = await self._ws.receive()
        if msg.type != aiohttp.WSMsgType.TEXT:
            return {"type": "closed"}
        return parse_server_message(msg.data)

    async def close(self) -> None:
        if self._ws is not None:
            await self._ws.close()
            self._ws = None
        if self._session is not None:
            await self._session.close()
            self._session = None


def parse_join(text: str) -> tuple[str, str]:
    """A client's first message: ``(room, token)``; SignalingError unless it is a join (admission is separate)."""
    try:
        first = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: deeply nested JSON
        raise SignalingError("expected a join message first") from None
    if not isinstance(first, dict) or first.get("type") != "join":
        raise SignalingError("expected a join message first")
    return str(first.get("room", "")), str(first.get("token", ""))


def parse_server_message(text: str) -> dict[str, Any]:
    """One JSON message from the server (or relayed verbatim from the other peer); SignalingError if unreadable."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: deeply nested JSON
        raise SignalingError("signaling server sent a malformed message") from None
    return data if isinstance(data, dict) else {"type": "malformed"}


def check_sdp(text: object, kind: str) -> RTCSessionDescription:
    """The other side's SDP ``kind`` (offer or answer), checked before aiortc applies it; SignalingError if unusable.

    A call negotiates one data channel only, so the description must parse and hold exactly one
    ``m=application`` section (``webrtc-datachannel``) with ICE credentials and a DTLS fingerprint (RFC 8841,
    RFC 8839). aiortc's parser raises assorted exception types on malformed text: all of them mean a bad description.
    """
    if not isinstance(text, str) or not text or len(text) > MAX_MESSAGE:
        raise SignalingError(f"the other side's {kind} carries no usable SDP")
    try:
        parsed = sdp.SessionDescription.parse(text)
    except Exception as exc:  # noqa: BLE001 - third-party parser of outside text: any failure is a malformed SDP
        raise SignalingError(f"malformed SDP {kind} from the other side ({type(exc).__name__})") from None
    media = parsed.media
    if len(media) != 1 or media[0].kind != "application" or media[0].fmt != ["webrtc-datachannel"]:
        raise SignalingError(f"the other side's SDP {kind} does not offer exactly one data channel")
    m = media[0]
    if not (m.ice.usernameFragment and m.ice.password and m.dtls is not None and m.dtls.fingerprints):
        raise SignalingError(f"the other side's SDP {kind} lacks ICE credentials or a DTLS fingerprint")
    return RTCSessionDescription(sdp=text, type=kind)


def remote_description(msg: dict[str, Any], kind: str) -> RTCSessionDescription:
    """The other side's ``offer``/``answer`` from a relayed signaling message (see :func:`check_sdp`)."""
    return check_sdp(msg.get("sdp"), kind)


def description_to_line(desc: RTCSessionDescription) -> str:
    """One copy-pasteable line: base64 of ``{"type", "sdp"}``."""
    return base64.b64encode(json.dumps({"type": desc.type, "sdp": desc.sdp}).encode()).decode()


def description_from_line(line: str, expected: str) -> RTCSessionDescription:
    """Parse what the other side printed; SignalingError (one line) if it is not a description of ``expected``."""
    try:
        data = json.loads(base64.b64decode(line.strip(), validate=True))
        kind = str(data["type"])
        text = data["sdp"]
    except (ValueError, KeyError, TypeError, RecursionError):
        raise SignalingError(f"pasted text is not an SDP {expected} line printed by sganc (copy the whole line)") from None
    if kind != expected:
        raise SignalingError(f"pasted an SDP {kind[:20]}, expected the other side's {expected}")
    return check_sdp(text, expected)


async def read_line(stream: TextIO, prompt: str, out: TextIO = sys.stderr) -> str:
    """Read one non-empty line without blocking the event loop."""
    print(prompt, file=out, flush=True)
    while True:
        line = await asyncio.to_thread(stream.readline)
        if not line:
            raise SignalingError("standard input closed before the other side's description was pasted")
        if line.strip():
            return line.strip()


def add_server_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8765, help="TCP port (default 8765; 0 = any free port)")
    p.add_argument("--duration", type=float, help="stop after this many seconds (default: run until interrupted)")


async def serve(host: str, port: int, duration: float | None, announce: Callable[[str], None] = print) -> None:
    """Run the server until ``duration`` elapses (or forever)."""
    if not 0 <= port <= 65535:
        raise InputError(f"--port must be in 0..65535, got {port}")
    server = SignalingServer()
    try:
        bound = await server.start(host, port)
    except OSError as exc:
        raise InputError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    announce(f"sganc-signal: listening on ws://{host}:{bound}/ws")
    try:
        if duration is None:
            await asyncio.Event().wait()
        else:
            await asyncio.sleep(duration)
    finally:
        await server.stop()


def signal_main(argv: list[str] | None = None) -> int:
    """``sganc-signal``: the pairing server."""
    p = ArgumentParser(prog="sganc-signal", description="sganc-stream signaling server (rooms of two, with a token)")
    add_server_arguments(p)
    p.add_argument("--verbose", action="store_true", help="log joins, leaves and refusals")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="sganc-signal: %(message)s")
    try:
        asyncio.run(serve(args.host, args.port, args.duration, lambda s: print(s, flush=True)))
    except SgancError as exc:
        print(f"sganc-signal: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return ended_by_signal("sganc-signal", signal.SIGINT)
    return 0
