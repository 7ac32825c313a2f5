"""Pairing: how two peers find each other and set up their WebRTC connection, behind one signaling interface.

As in aiortc's examples (``create_signaling()`` / ``consume_signaling()``): a :class:`Signaling` object carries
session descriptions between the two sides — :class:`RoomSignaling` through ``sganc-signal`` (rooms of two, with a
token), :class:`CopyPasteSignaling` through the terminal (each side prints one line and pastes the other's) — and
:func:`consume_signaling` turns what it receives into connections: it makes the offer when the other side joins,
answers an offer, applies an answer, and drops the connection when the other side leaves. Each
:class:`Connection` is one RTCPeerConnection with the call's one negotiated data channel; when the channel opens,
the :class:`ChannelHandler` (the call) gets it as a :class:`~sganc_stream.rtc.channel.Channel`.

aiortc gathers every ICE candidate before ``setLocalDescription`` returns, so one offer and one answer carry
everything: no trickle ICE (a browser peer must wait for ICE gathering to complete before sending its SDP).
"""

from __future__ import annotations

import asyncio
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TextIO

from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription

from sganc_stream.rtc.channel import Channel, DataChannel
from sganc_stream.rtc.signaling import (SignalingClient, SignalingError, description_from_line, description_to_line,
                                        read_line)
from sganc_stream.rtc.transport import CHANNEL_LABEL, CHANNEL_OPTIONS, peer_max_message


@dataclass(frozen=True)
class Signal:
    """One pairing event.

    ``kind``: ``start`` (the other side is there: make an offer), ``offer`` / ``answer`` (its description),
    ``left`` (it left: drop the connection, wait for the next), ``gone`` (the signaling path is gone: the current
    connection, if any, goes on).
    """

    kind: str
    description: RTCSessionDescription | None = None


class Signaling(ABC):
    """Carries session descriptions between the two sides of a call."""

    @abstractmethod
    async def connect(self) -> str:
        """Get ready (e.g. join the room); returns what to tell the user, or "" for nothing."""

    @abstractmethod
    async def receive(self) -> Signal:
        """The next pairing event (waits for it)."""

    @abstractmethod
    async def send(self, description: RTCSessionDescription) -> None:
        """Our offer or answer, to the other side."""

    async def close(self) -> None:
        """Leave (the other side learns it, where the path allows)."""


class RoomSignaling(Signaling):
    """Through ``sganc-signal``: join ``room`` with ``token``; the peer already there makes the offer."""

    def __init__(self, url: str, room: str, token: str) -> None:
        if not url.startswith(("ws://", "wss://", "http://", "https://")):
            raise SignalingError(f"--signal must be a ws:// or http:// URL, got {url!r}")
        self.client = SignalingClient(url.replace("http://", "ws://").replace("https://", "wss://"), room, token)
        self.room = room

    async def connect(self) -> str:
        await self.client.join()
        return f"joined room {self.room}"

    async def receive(self) -> Signal:
        while True:
            msg = await self.client.recv()
            kind = msg.get("type")
            if kind == "peer-joined":
                return Signal("start")
            if kind in ("offer", "answer"):
                return Signal(str(kind), RTCSessionDescription(str(msg.get("sdp")), str(kind)))
            if kind == "peer-left":
                return Signal("left")
            if kind == "closed":
                return Signal("gone")

    async def send(self, description: RTCSessionDescription) -> None:
        await self.client.send({"type": description.type, "sdp": description.sdp})

    async def close(self) -> None:
        await self.client.close()


class CopyPasteSignaling(Signaling):
    """Through the terminal: the ``offer`` side prints its offer line and reads the answer line; the ``answer``
    side reads the offer line and prints its answer line. One connection, no rejoin."""

    def __init__(self, role: str, stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout) -> None:
        if role not in ("offer", "answer"):
            raise SignalingError(f"--serverless must be offer or answer, got {role!r}")
        self.role, self.stdin, self.stdout = role, stdin, stdout
        self._step = 0

    async def connect(self) -> str:
        return ""

    async def receive(self) -> Signal:
        self._step += 1
        if self._step == 1 and self.role == "offer":
            return Signal("start")
        if self._step == 1:
            line = await read_line(self.stdin, "paste the other side's offer line:")
            return Signal("offer", description_from_line(line, "offer"))
        if self._step == 2 and self.role == "offer":
            line = await read_line(self.stdin, "paste the other side's answer line:")
            return Signal("answer", description_from_line(line, "answer"))
        await asyncio.Event().wait()  # copy-paste pairs once
        raise AssertionError("unreachable")

    async def send(self, description: RTCSessionDescription) -> None:
        print(description_to_line(description), file=self.stdout, flush=True)


def create_signaling(*, signal: str | None, room: str, token: str, serverless: str | None,
                     stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout) -> Signaling:
    """The signaling the command line asks for (``--signal URL`` or ``--serverless offer|answer``)."""
    if signal is None and serverless is None:
        raise SignalingError("pass --signal URL (with --room and --token) or --serverless offer|answer")
    if signal is not None and serverless is not None:
        raise SignalingError("--signal and --serverless exclude each other")
    if signal is not None:
        return RoomSignaling(signal, room, token)
    assert serverless is not None
    return CopyPasteSignaling(serverless, stdin, stdout)


class ChannelHandler(Protocol):
    """What a call offers to pairing."""

    def attach(self, channel: Channel) -> None:
        """A connection's data channel opened: start the call on it."""

    def release(self, channel: Channel, why: str) -> None:
        """This side drops the connection (the other side left, or was replaced): say goodbye, forget it."""


class Connection:
    """One RTCPeerConnection with the call's negotiated data channel (``transport.CHANNEL_OPTIONS``)."""

    def __init__(self, ice_servers: list[str], handler: ChannelHandler) -> None:
        config = RTCConfiguration([RTCIceServer(u) for u in ice_servers]) if ice_servers else RTCConfiguration()
        self.pc = RTCPeerConnection(config)
        self.channel = DataChannel(self.pc.createDataChannel(CHANNEL_LABEL, **CHANNEL_OPTIONS))
        self.channel.channel.on("open", lambda: handler.attach(self.channel))

        @self.pc.on("connectionstatechange")
        def _state() -> None:
            if self.pc.connectionState in ("failed", "closed"):
                self.channel.connection_failed(self.pc.connectionState)

    async def offer(self) -> RTCSessionDescription:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return self.pc.localDescription

    async def answer(self, offer: RTCSessionDescription) -> RTCSessionDescription:
        await self.pc.setRemoteDescription(offer)
        self.channel.max_message = peer_max_message(offer.sdp)
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        return self.pc.localDescription

    async def accept(self, answer: RTCSessionDescription) -> None:
        await self.pc.setRemoteDescription(answer)
        self.channel.max_message = peer_max_message(answer.sdp)

    async def close(self) -> None:
        await self.pc.close()


async def consume_signaling(signaling: Signaling, handler: ChannelHandler, *, ice_servers: list[str],
                            say: Callable[[str], None]) -> None:
    """Follow ``signaling`` for the call's whole life (cancel to stop); the last connection is closed on exit."""
    connection: Connection | None = None

    async def drop(why: str) -> None:
        nonlocal connection
        if connection is not None:
            old, connection = connection, None
            handler.release(old.channel, why)
            await old.close()

    try:
        while True:
            signal = await signaling.receive()
            try:
                if signal.kind == "start":
                    await drop("replaced")
                    connection = Connection(ice_servers, handler)
                    await signaling.send(await connection.offer())
                    say("peer joined; offer sent")
                elif signal.kind == "offer" and signal.description is not None:
                    await drop("replaced")
                    connection = Connection(ice_servers, handler)
                    await signaling.send(await connection.answer(signal.description))
                    say("offer received; answer sent")
                elif signal.kind == "answer" and signal.description is not None and connection is not None:
                    await connection.accept(signal.description)
                elif signal.kind == "left":
                    if connection is None or not connection.channel.closed:  # else the call said it already
                        say("the other side left; waiting for it to rejoin")
                    await drop("peer left")
                elif signal.kind == "gone":
                    say("signaling went away; the current connection (if any) goes on")
                    await asyncio.Event().wait()
            except ValueError as exc:  # aiortc rejects a malformed or out-of-state description with ValueError
                say(f"ignored a bad description from the other side ({exc})")
    finally:
        await drop("finished")

