"""Channels: the loss models (seeded, rate and burst length as specified), loss injection on the sending side,
and the in-process test transport (delivery, delay, reordering by jitter, close on both ends)."""

from __future__ import annotations

import asyncio

import pytest

from sganc_stream.errors import SgancError
from sganc_stream.rtc.channel import LossModel, LossyChannel, memory_pair


def bursts(drops: list[bool]) -> list[int]:
    runs, n = [], 0
    for d in drops + [False]:
        if d:
            n += 1
        elif n:
            runs.append(n)
            n = 0
    return runs


def test_independent_loss_is_seeded_at_its_rate() -> None:
    a, b = LossModel(0.2, seed=7), LossModel(0.2, seed=7)
    drops = [a(b"") for _ in range(20000)]
    assert drops == [b(b"") for _ in range(20000)]
    assert a.dropped == sum(drops) and 0.19 < a.dropped / 20000 < 0.21
    assert 1.2 < sum(bursts(drops)) / len(bursts(drops)) < 1.3  # geometric, mean 1 / (1 - p)
    assert not any(LossModel(0.0)(b"") for _ in range(100))


def test_bursty_loss_keeps_its_rate_with_longer_bursts() -> None:
    model = LossModel(0.1, burst=4.0, seed=3)
    drops = [model(b"") for _ in range(50000)]
    assert 0.09 < sum(drops) / len(drops) < 0.11
    assert 3.6 < sum(bursts(drops)) / len(bursts(drops)) < 4.4


def test_loss_model_rejects_impossible_settings() -> None:
    with pytest.raises(SgancError, match=r"\[0, 1\)"):
        LossModel(1.0)
    with pytest.raises(SgancError, match="at least 1"):
        LossModel(0.1, burst=0.5)
    with pytest.raises(SgancError, match="cannot come in bursts"):
        LossModel(0.6, burst=1.2)


def test_memory_pair_delivers_delays_reorders_and_closes() -> None:
    async def body() -> None:
        a, b = memory_pair(delay_s=0.01, jitter_s=0.05, seed=1)
        got: list[bytes] = []
        closed: list[str] = []
        b.on_message = got.append
        a.on_close = closed.append
        b.on_close = closed.append
        for i in range(30):
            a.send(bytes([i]))
        assert got == []  # nothing arrives before its delay
        await asyncio.sleep(0.2)
        assert sorted(got) == [bytes([i]) for i in range(30)] and got != sorted(got)  # all there, some reordered
        a.close()
        assert closed == ["channel closed", "channel closed"] and not b.is_open
        a.send(b"x")
        await asyncio.sleep(0.05)
        assert len(got) == 30

    asyncio.run(body())


def test_lossy_channel_drops_what_this_side_sends_only() -> None:
    async def body() -> None:
        a, b = memory_pair()
        lossy = LossyChannel(a, lambda data: data.startswith(b"drop"))
        at_a: list[bytes] = []
        at_b: list[bytes] = []
        lossy.on_message = at_a.append
        b.on_message = at_b.append
        for data in (b"keep1", b"drop1", b"keep2"):
            lossy.send(data)
            b.send(data)
        await asyncio.sleep(0.01)
        assert at_b == [b"keep1", b"keep2"] and at_a == [b"keep1", b"drop1", b"keep2"]

    asyncio.run(body())
