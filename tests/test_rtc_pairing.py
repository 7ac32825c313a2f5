"""Pairing behind one signaling interface: copy-paste lines, the command line's choice, and two real aiortc
connections set up by consume_signaling over an in-memory signaling path (offer on join, answer, leave)."""

from __future__ import annotations

import asyncio
import io

import aioice.ice
import pytest
from aiortc import RTCSessionDescription

from fuzz.targets import OFFER
from sganc_stream.rtc.channel import Channel
from sganc_stream.rtc.loopback import enable_loopback
from sganc_stream.rtc.pairing import (CopyPasteSignaling, RoomSignaling, Signal, Signaling, consume_signaling,
                                      create_signaling)
from sganc_stream.rtc.signaling import SignalingError, description_to_line

SDP = RTCSessionDescription(sdp=OFFER, type="offer")  # a real data-channel description: the other side's is checked


def test_create_signaling_follows_the_command_line() -> None:
    assert isinstance(create_signaling(signal="ws://h:1", room="r", token="", serverless=None), RoomSignaling)
    assert isinstance(create_signaling(signal=None, room="r", token="", serverless="offer"), CopyPasteSignaling)
    with pytest.raises(SignalingError, match="pass --signal URL"):
        create_signaling(signal=None, room="r", token="", serverless=None)
    with pytest.raises(SignalingError, match="exclude each other"):
        create_signaling(signal="ws://h:1", room="r", token="", serverless="answer")
    with pytest.raises(SignalingError, match="ws:// or http://"):
        create_signaling(signal="ftp://h", room="r", token="", serverless=None)


def test_copy_paste_offer_side_prints_then_reads() -> None:
    async def body() -> None:
        answer = RTCSessionDescription(sdp=SDP.sdp, type="answer")
        out = io.StringIO()
        sig = CopyPasteSignaling("offer", io.StringIO(description_to_line(answer) + "\n"), out)
        assert await sig.connect() == ""
        assert await sig.receive() == Signal("start")
        await sig.send(SDP)
        assert out.getvalue() == description_to_line(SDP) + "\n"
        got = await sig.receive()
        assert got.kind == "answer" and got.description.sdp == SDP.sdp  # type: ignore[union-attr]
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(sig.receive(), 0.1)  # pairs once

    asyncio.run(body())


def test_copy_paste_answer_side_reads_the_offer() -> None:
    async def body() -> None:
        sig = CopyPasteSignaling("answer", io.StringIO("\n" + description_to_line(SDP) + "\n"), io.StringIO())
        got = await sig.receive()
        assert got.kind == "offer" and got.description.sdp == SDP.sdp  # type: ignore[union-attr]
        with pytest.raises(SignalingError, match="expected the other side's offer"):
            answer_line = description_to_line(RTCSessionDescription(sdp=SDP.sdp, type="answer"))
            await CopyPasteSignaling("answer", io.StringIO(answer_line + "\n"), io.StringIO()).receive()

    asyncio.run(body())


class QueueSignaling(Signaling):
    """One side of an in-memory signaling path (what a test needs of a room)."""

    def __init__(self, inbox: asyncio.Queue[Signal], outbox: asyncio.Queue[Signal]) -> None:
        self.inbox, self.outbox = inbox, outbox

    async def connect(self) -> str:
        return ""

    async def receive(self) -> Signal:
        return await self.inbox.get()

    async def send(self, description: RTCSessionDescription) -> None:
        await self.outbox.put(Signal(description.type, description))


class Recorder:
    def __init__(self) -> None:
        self.channels: list[Channel] = []
        self.released: list[str] = []
        self.got: list[bytes] = []

    def attach(self, channel: Channel) -> None:
        channel.on_message = self.got.append
        self.channels.append(channel)

    def release(self, channel: Channel, why: str) -> None:
        self.released.append(why)


def test_consume_signaling_connects_two_peers_and_drops_on_leave(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aioice.ice, "get_host_addresses", aioice.ice.get_host_addresses)  # restored afterwards
    enable_loopback()

    async def body() -> None:
        to_a: asyncio.Queue[Signal] = asyncio.Queue()
        to_b: asyncio.Queue[Signal] = asyncio.Queue()
        a, b = Recorder(), Recorder()
        said: list[str] = []
        tasks = [asyncio.ensure_future(consume_signaling(QueueSignaling(to_a, to_b), a, ice_servers=[], say=said.append)),
                 asyncio.ensure_future(consume_signaling(QueueSignaling(to_b, to_a), b, ice_servers=[], say=said.append))]
        await to_a.put(Signal("start"))  # as the room tells the peer already there
        for _ in range(600):
            if a.channels and b.channels:
                break
            await asyncio.sleep(0.05)
        assert a.channels and b.channels, said
        a.channels[0].send(b"\x95hello")
        for _ in range(200):
            if b.got:
                break
            await asyncio.sleep(0.05)
        assert b.got == [b"\x95hello"]
        assert "peer joined; offer sent" in said and "offer received; answer sent" in said
        await to_a.put(Signal("left"))
        for _ in range(100):
            if a.released:
                break
            await asyncio.sleep(0.05)
        assert a.released == ["peer left"]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        assert b.released == ["finished"]

    asyncio.run(asyncio.wait_for(body(), 90))


def test_connections_learn_the_other_sides_max_message_size() -> None:
    """Each side bounds its messages by what the other side's description announces (a=max-message-size)."""
    from sganc_stream.rtc.pairing import Connection

    async def body() -> tuple[int, int]:
        a, b = Connection([], Recorder()), Connection([], Recorder())
        offer = await a.offer()
        answer = await b.answer(RTCSessionDescription(offer.sdp.replace("max-message-size:262144",
                                                                        "max-message-size:5000"), "offer"))
        await a.accept(RTCSessionDescription(answer.sdp.replace("max-message-size:262144", "max-message-size:1200"),
                                             "answer"))
        sizes = a.channel.max_message_size, b.channel.max_message_size
        await a.close()
        await b.close()
        return sizes

    assert asyncio.run(body()) == (1200, 5000)
