"""Message channels of the live call: the WebRTC data channel, loss injection, and an in-process test transport.

The call (``rtc.session``) sees only :class:`Channel`: an unreliable, unordered, message-preserving pipe with an
``open`` state and a send-buffer level. :class:`DataChannel` adapts aiortc's RTCDataChannel to it;
:class:`LossyChannel` drops messages that *this side sends* (any message: hellos, acknowledgements, keyframe
requests and frames alike), with :class:`LossModel` deciding which (independent or in bursts, seeded);
:func:`memory_pair` joins two calls in one process without WebRTC, with an optional delay and jitter (which can
reorder messages), for tests and protocol benchmarks. Real network loss, delay and bandwidth caps belong to the
network (see ``tests/netns.py``), not here.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable

from aiortc import RTCDataChannel

from sganc_stream.errors import SgancError
from sganc_stream.rtc.transport import DEFAULT_PEER_MAX_MESSAGE

HUNG_UP = "closed by the other side"  # the close reason of a channel whose other side closed it on purpose
MessageHandler = Callable[[bytes | str], None]
CloseHandler = Callable[[str], None]


class Channel:
    """One message channel of a call. Set ``on_message`` / ``on_close`` to receive; ``send`` never blocks."""

    def __init__(self) -> None:
        self.on_message: MessageHandler | None = None
        self.on_close: CloseHandler | None = None

    @property
    def is_open(self) -> bool:
        raise NotImplementedError

    @property
    def buffered_amount(self) -> int:
        """Bytes accepted by ``send`` and not yet handed to the network."""
        return 0

    @property
    def max_message_size(self) -> int:
        """The largest message the other side accepts, in bytes (0: no limit)."""
        return 0

    def send(self, data: bytes) -> None:
        """Send one message if the channel is open (a closed channel drops it: the call is ending anyway)."""
        raise NotImplementedError

    async def close_gracefully(self, timeout_s: float) -> None:
        """Close this side after what it sent has gone out, waiting at most ``timeout_s`` seconds (a channel whose
        messages need no flushing does nothing here)."""

    def _deliver(self, data: bytes | str) -> None:
        if self.on_message is not None:
            self.on_message(data)

    def _closed(self, why: str) -> None:
        handler, self.on_close = self.on_close, None  # report a close once
        if handler is not None:
            handler(why)


class DataChannel(Channel):
    """aiortc's RTCDataChannel as a :class:`Channel`; ``on_close`` also fires when the connection fails."""

    def __init__(self, channel: RTCDataChannel) -> None:
        super().__init__()
        self.channel = channel
        self.max_message = DEFAULT_PEER_MAX_MESSAGE  # the other side's SDP max-message-size, once known (pairing)
        channel.on("message", self._deliver)
        channel.on("close", self._on_channel_close)

    @property
    def is_open(self) -> bool:
        return self.channel.readyState == "open"

    @property
    def closed(self) -> bool:
        """The channel has closed (its close was reported through ``on_close``)."""
        return self.channel.readyState == "closed"

    @property
    def buffered_amount(self) -> int:
        return self.channel.bufferedAmount

    @property
    def max_message_size(self) -> int:
        return self.max_message

    def send(self, data: bytes) -> None:
        if self.is_open:
            self.channel.send(data)

    def _on_channel_close(self) -> None:
        # a stream reset leaves the SCTP association up: the other side closed the channel on purpose
        # (close_gracefully); a failed or aborted association closes every channel with it
        self._closed(HUNG_UP if self.channel.transport.state == "connected" else "channel closed")

    async def close_gracefully(self, timeout_s: float) -> None:
        """Reset the channel's SCTP stream and wait, at most ``timeout_s`` s, until the other side has answered.

        The reset follows every message already sent (W3C WebRTC §6.2.4, "closing procedure"; RFC 8831 §6.7), so the
        other side reads our last message, an end packet, before its channel closes. Closing the peer connection
        at once instead aborts the SCTP association (RFC 4960 §9.1) and drops what is still queued.
        """
        if self.channel.readyState not in ("open", "connecting"):
            return
        closed = asyncio.Event()
        self.channel.on("close", closed.set)
        self.channel.close()
        try:
            await asyncio.wait_for(closed.wait(), timeout_s)
        except TimeoutError:
            pass

    def connection_failed(self, state: str) -> None:
        self._closed(f"connection {state}")


class LossModel:
    """Which messages a :class:`LossyChannel` drops: a two-state Gilbert–Elliott model, seeded.

    Loss probability ``p`` on average, in bursts of ``burst`` messages on average (geometric lengths). A lost
    message is followed by another loss with probability ``1 - 1/burst``; a delivered one with probability
    ``p / (burst (1 - p))``, which makes the stationary loss rate ``p``. ``burst=None`` is independent (Bernoulli)
    loss, whose bursts average ``1 / (1 - p)`` messages.
    """

    def __init__(self, p: float, burst: float | None = None, seed: int = 0) -> None:
        if not 0.0 <= p < 1.0:
            raise SgancError(f"loss probability must be in [0, 1), got {p}")
        burst = 1.0 / (1.0 - p) if burst is None else burst
        if burst < 1.0:
            raise SgancError(f"mean loss burst must be at least 1 message, got {burst}")
        self.p, self.burst = p, burst
        self.enter = p / (burst * (1.0 - p))
        if self.enter > 1.0:
            raise SgancError(f"loss {p} cannot come in bursts as short as {burst} (need p <= burst / (burst + 1))")
        self.stay = 1.0 - 1.0 / burst
        self.rng = random.Random(seed)
        self.bad = False
        self.dropped = 0

    def __call__(self, data: bytes) -> bool:
        """True when ``data`` is to be dropped."""
        self.bad = self.rng.random() < (self.stay if self.bad else self.enter)
        self.dropped += self.bad
        return self.bad


class LossyChannel(Channel):
    """A channel whose outgoing messages pass ``drop`` first (tests and benchmarks: ``--loss``)."""

    def __init__(self, inner: Channel, drop: Callable[[bytes], bool]) -> None:
        super().__init__()
        self.inner, self.drop = inner, drop
        inner.on_message = self._deliver
        inner.on_close = self._closed

    @property
    def is_open(self) -> bool:
        return self.inner.is_open

    @property
    def buffered_amount(self) -> int:
        return self.inner.buffered_amount

    @property
    def max_message_size(self) -> int:
        return self.inner.max_message_size

    def send(self, data: bytes) -> None:
        if not self.drop(data):
            self.inner.send(data)

    async def close_gracefully(self, timeout_s: float) -> None:
        await self.inner.close_gracefully(timeout_s)


class MemoryChannel(Channel):
    """One end of :func:`memory_pair`."""

    def __init__(self, delay_s: float, jitter_s: float, rng: random.Random) -> None:
        super().__init__()
        self.peer: MemoryChannel | None = None
        self.delay_s, self.jitter_s, self.rng = delay_s, jitter_s, rng
        self.open = True
        self.max_message = 0  # what the other end accepts (tests set a limit)

    @property
    def is_open(self) -> bool:
        return self.open

    @property
    def max_message_size(self) -> int:
        return self.max_message

    def send(self, data: bytes) -> None:
        if not self.open or self.peer is None:
            return
        delay = self.delay_s + self.rng.uniform(0.0, self.jitter_s)
        asyncio.get_running_loop().call_later(delay, self.peer._arrive, data)

    def _arrive(self, data: bytes) -> None:
        if self.open:
            self._deliver(data)

    def close(self) -> None:
        """Close both ends (each side's ``on_close`` fires once)."""
        for end in (self, self.peer):
            if end is not None and end.open:
                end.open = False
                end._closed("channel closed")


def memory_pair(delay_s: float = 0.0, jitter_s: float = 0.0, seed: int = 0) -> tuple[MemoryChannel, MemoryChannel]:
    """Two connected in-process channels; each message takes ``delay_s`` plus up to ``jitter_s`` (uniform,
    seeded), so jitter larger than the frame interval reorders messages as a real network can."""
    rng = random.Random(seed)
    a, b = MemoryChannel(delay_s, jitter_s, rng), MemoryChannel(delay_s, jitter_s, rng)
    a.peer, b.peer = b, a
    return a, b
