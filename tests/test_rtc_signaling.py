"""Signaling server rooms: pairing, relaying, refusals (wrong token, third peer), leave notices; copy-paste lines."""

from __future__ import annotations

import asyncio
import io

import pytest
from aiortc import RTCSessionDescription

from fuzz.targets import OFFER

from sganc_stream.rtc.signaling import (SignalingClient, SignalingError, SignalingServer, description_from_line,
                                        description_to_line, read_line)


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(asyncio.wait_for(coro, timeout=20))


async def _server() -> tuple[SignalingServer, str]:
    server = SignalingServer()
    port = await server.start("127.0.0.1", 0)
    return server, f"ws://127.0.0.1:{port}"


def test_two_peers_pair_relay_and_leave() -> None:
    async def body() -> None:
        server, url = await _server()
        a, b = SignalingClient(url, "r1", "tok"), SignalingClient(url, "r1", "tok")
        try:
            assert (await a.join())["peers"] == 1
            assert (await b.join())["peers"] == 2
            assert (await a.recv())["type"] == "peer-joined"
            await a.send({"type": "offer", "sdp": "x"})
            assert await b.recv() == {"type": "offer", "sdp": "x"}
            await b.close()
            assert (await a.recv())["type"] == "peer-left"
            assert len(server.rooms["r1"].peers) == 1
        finally:
            await a.close()
            await b.close()
            await server.stop()
        assert not server.rooms

    run(body())


def test_stopping_the_server_closes_its_peers_promptly() -> None:
    """Peers still in their rooms do not hold the server's shutdown (aiohttp would wait 60 s for their handlers):
    their sockets are closed with 1001 going-away, and each peer hears that signaling is gone."""
    async def body() -> None:
        server, url = await _server()
        a, b = SignalingClient(url, "r1", "tok"), SignalingClient(url, "r1", "tok")
        try:
            await a.join()
            await b.join()
            assert (await a.recv())["type"] == "peer-joined"
            loop = asyncio.get_running_loop()
            start = loop.time()
            await server.stop()
            assert loop.time() - start < 1.5
            heard = [[(await peer.recv())["type"] for _ in range(2)] for peer in (a, b)]
            assert all(h[0] == "closed" or h == ["peer-left", "closed"] for h in heard), heard
        finally:
            await a.close()
            await b.close()

    run(body())


def test_wrong_token_and_third_peer_are_refused_with_one_line() -> None:
    async def body() -> None:
        server, url = await _server()
        a, b = SignalingClient(url, "r", "secret"), SignalingClient(url, "r", "secret")
        try:
            await a.join()
            with pytest.raises(SignalingError, match="wrong token for room 'r'"):
                await SignalingClient(url, "r", "guess").join()
            await b.join()
            with pytest.raises(SignalingError, match="room 'r' is full") as info:
                await SignalingClient(url, "r", "secret").join()
            assert "\n" not in str(info.value)
            with pytest.raises(SignalingError, match="room names"):
                await SignalingClient(url, "bad room!", "x").join()
        finally:
            await a.close()
            await b.close()
            await server.stop()

    run(body())


def test_unreachable_server_is_one_line() -> None:
    async def body() -> None:
        server, url = await _server()
        await server.stop()
        with pytest.raises(SignalingError, match="cannot reach signaling server"):
            await SignalingClient(url, "r", "").join()

    run(body())


def test_description_lines_round_trip_and_reject_garbage() -> None:
    desc = RTCSessionDescription(sdp=OFFER, type="offer")
    line = description_to_line(desc)
    assert "\n" not in line
    back = description_from_line(line + "\n", "offer")
    assert (back.sdp, back.type) == (desc.sdp, desc.type)
    with pytest.raises(SignalingError, match="expected the other side's answer"):
        description_from_line(line, "answer")
    with pytest.raises(SignalingError, match="not an SDP offer line"):
        description_from_line("hello", "offer")
    bare = RTCSessionDescription(sdp="v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\n", type="offer")  # no data channel
    with pytest.raises(SignalingError, match="exactly one data channel"):
        description_from_line(description_to_line(bare), "offer")


def test_read_line_skips_blank_lines_and_reports_eof() -> None:
    out = io.StringIO()
    assert asyncio.run(read_line(io.StringIO("\n  \nabc\n"), "paste:", out)) == "abc"
    assert "paste:" in out.getvalue()
    with pytest.raises(SignalingError, match="standard input closed"):
        asyncio.run(read_line(io.StringIO(""), "paste:", out))
