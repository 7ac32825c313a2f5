"""Real network conditions for call tests: two network namespaces joined by a veth pair, or by a user-space relay,
made by the test itself.

Veth pair (:class:`NetnsPair`): loss is dropped by an nftables ``numgen random`` rule on the *receiving* namespace's
input hook (on the output hook the sender's ``sendto`` would fail with EPERM instead of the packet being lost), on
UDP only, so the signaling WebSocket (TCP) is never touched; a bandwidth cap is a ``tc`` htb token bucket with a
short FIFO on the UDP a veth sends. This kernel has no ``netem`` (nor ``prio``).

Relay (:class:`RelayPair`): each namespace gets a TUN device instead of a veth end, and a user-space relay in this
process (:class:`Relay`, threads) carries every IP packet between the two, applying an :class:`Impairment` to UDP:
delay, jitter, random or bursty (Gilbert–Elliott) loss, reordering and a bandwidth cap with a drop-tail queue (what
``netem`` and ``tbf`` would do). TCP (signaling) passes unimpaired. A TUN device is opened here, in this namespace,
and then moved into its namespace: the open file keeps carrying its packets.

Only addresses inside the namespaces are used (10.231.0.1 and 10.231.0.2). Needs root, ``ip``, ``tc`` and ``nft``
(``apt-get install nftables``), and ``/dev/net/tun`` for the relay; :func:`unavailable` says why not, for a skip.
"""

from __future__ import annotations

import fcntl
import heapq
import os
import random
import select
import shutil
import struct
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sganc_stream.rtc.channel import LossModel

ADDRESSES = ("10.231.0.1", "10.231.0.2")
TUN = "/dev/net/tun"
TUNSETIFF, IFF_TUN, IFF_NO_PI = 0x400454CA, 0x0001, 0x1000
UDP = 17


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, text=True, timeout=30)


def unavailable() -> str | None:
    """Why namespaces cannot be made here (None: they can)."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    missing = [tool for tool in ("ip", "tc", "nft") if shutil.which(tool) is None]
    if missing:
        return f"missing {', '.join(missing)} (apt-get install iproute2 nftables)"
    if not os.path.exists(TUN):
        return f"no {TUN} (the relay's TUN devices)"
    probe = f"sganc-probe-{os.getpid()}"
    try:
        _run("ip", "netns", "add", probe)
    except (subprocess.CalledProcessError, OSError) as exc:
        return f"cannot create a network namespace: {getattr(exc, 'stderr', '') or exc}".strip()
    _run("ip", "netns", "del", probe)
    return None


class NetnsPair:
    """Namespaces ``<tag>a`` (10.231.0.1) and ``<tag>b`` (10.231.0.2) joined by a veth pair; removed on exit."""

    def __init__(self, tag: str) -> None:
        self.names = (f"{tag}a", f"{tag}b")
        self.links = (f"{tag}va", f"{tag}vb")

    def __enter__(self) -> NetnsPair:
        for ns in self.names:
            _run("ip", "netns", "add", ns)
        try:
            self._make_links()
            for ns, link, addr in zip(self.names, self.links, ADDRESSES):
                _run("ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", link)
                _run("ip", "-n", ns, "link", "set", link, "up")
                _run("ip", "-n", ns, "link", "set", "lo", "up")
        except BaseException:
            self.__exit__()
            raise
        return self

    def _make_links(self) -> None:
        """Device ``links[i]`` in namespace ``names[i]``: here a veth pair."""
        a, b = self.names
        _run("ip", "link", "add", self.links[0], "netns", a, "type", "veth", "peer", "name", self.links[1], "netns", b)

    def __exit__(self, *exc: object) -> None:
        for ns in self.names:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)  # takes the veth pair along

    def drop_incoming_udp(self, side: int, p: float) -> None:
        """Drop each UDP packet arriving in namespace ``side`` (0 or 1) with probability ``p`` (nftables)."""
        ns, per_mille = self.names[side], round(p * 1000)
        _run("ip", "netns", "exec", ns, "nft", "add", "table", "inet", "sganc")
        _run("ip", "netns", "exec", ns, "nft", "add", "chain", "inet", "sganc", "input",
             "{ type filter hook input priority 0; policy accept; }")
        _run("ip", "netns", "exec", ns, "nft", "add", "rule", "inet", "sganc", "input", "meta", "l4proto", "udp",
             "numgen", "random", "mod", "1000", "<", str(per_mille), "drop")

    def cap_egress_udp(self, side: int, kbit: int, burst_bytes: int = 1600, queue_packets: int = 4) -> None:
        """A bandwidth cap on the UDP that namespace ``side`` sends: an ``htb`` class of ``kbit`` (a token bucket)
        with a ``queue_packets``-long FIFO, beyond which packets are dropped, as at a real bottleneck with a small
        buffer; a u32 filter sends IP protocol 17 there. TCP (signaling) goes through an uncapped class: its WebSocket
        heartbeat would otherwise fail first. (This kernel has no ``prio`` qdisc.)"""
        ns, dev = self.names[side], self.links[side]
        tc = ("ip", "netns", "exec", ns, "tc")
        _run(*tc, "qdisc", "add", "dev", dev, "root", "handle", "1:", "htb", "default", "20")
        _run(*tc, "class", "add", "dev", dev, "parent", "1:", "classid", "1:10", "htb", "rate", f"{kbit}kbit",
             "ceil", f"{kbit}kbit", "burst", str(burst_bytes))
        _run(*tc, "class", "add", "dev", dev, "parent", "1:", "classid", "1:20", "htb", "rate", "100mbit")
        _run(*tc, "qdisc", "add", "dev", dev, "parent", "1:10", "handle", "10:", "pfifo", "limit", str(queue_packets))
        _run(*tc, "filter", "add", "dev", dev, "parent", "1:", "protocol", "ip", "prio", "1", "u32", "match", "ip",
             "protocol", "17", "0xff", "flowid", "1:10")

    def popen(self, side: int, argv: Sequence[str | Path], env: dict[str, str]) -> subprocess.Popen[str]:
        """Start ``argv`` inside namespace ``side``."""
        return subprocess.Popen(["ip", "netns", "exec", self.names[side], *map(str, argv)], env=env, text=True,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


@dataclass
class Impairment:
    """What the relay does to each UDP packet, per direction (each has its own random stream).

    ``delay_ms`` + a uniform jitter in [0, ``jitter_ms``] (packets keep no order of their own: jitter larger than the
    spacing reorders them); ``reorder``: the probability that a packet is held back a further ``reorder_ms``, so that
    later ones overtake it; ``loss``: the loss probability, in bursts of mean length ``loss_burst`` packets
    (:class:`sganc_stream.rtc.channel.LossModel`, Gilbert–Elliott; None: independent losses);
    ``rate_kbit``: a bandwidth cap (each packet occupies the link for its size at that rate) with a drop-tail queue
    of at most ``queue_ms`` waiting; None: no cap."""

    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    reorder: float = 0.0
    reorder_ms: float = 0.0
    loss: float = 0.0
    loss_burst: float | None = None
    rate_kbit: float | None = None
    queue_ms: float = 50.0
    seed: int = 0


@dataclass
class DirectionStats:
    """Counts of one direction's UDP packets (``reordered``: released before one that arrived earlier)."""

    packets: int = 0
    lost: int = 0
    dropped_queue: int = 0
    reordered: int = 0
    bytes: int = 0


@dataclass(order=True)
class _Held:
    due: float
    order: int
    data: bytes = field(compare=False)
    out: int = field(compare=False)
    stats: DirectionStats = field(compare=False)


class _Direction:
    """One direction's impairment state: the loss chain, the link's busy time, the arrival numbering."""

    def __init__(self, imp: Impairment, seed: int) -> None:
        self.imp, self.rng, self.stats = imp, random.Random(seed), DirectionStats()
        self.loss = LossModel(imp.loss, imp.loss_burst, seed + 1000)  # the call's --loss model, on datagrams here
        self.link_free = 0.0  # monotonic time the capped link finishes its last packet

    def due(self, now: float, data: bytes) -> float | None:
        """When the packet leaves the relay, or None when it is lost (random loss or a full queue)."""
        imp, size = self.imp, len(data)
        if self.loss(data):
            self.stats.lost += 1
            return None
        start = now
        if imp.rate_kbit:
            start = max(now, self.link_free)
            if start - now > imp.queue_ms / 1000:
                self.stats.dropped_queue += 1
                return None
            self.link_free = start + size * 8 / (imp.rate_kbit * 1000)
            start = self.link_free
        extra = imp.delay_ms + self.rng.uniform(0, imp.jitter_ms)
        if imp.reorder and self.rng.random() < imp.reorder:
            extra += imp.reorder_ms
        return start + extra / 1000


class Relay:
    """A user-space IP relay between two TUN devices (threads): impairs UDP by :class:`Impairment`, passes the rest.

    ``start()`` opens TUN devices ``names`` here (they appear in this network namespace) and starts the threads; the
    caller then moves each device into its namespace. ``stats``: per direction (0: a → b, 1: b → a)."""

    def __init__(self, names: tuple[str, str], impairment: Impairment) -> None:
        self.names, self.imp = names, impairment
        self.fds: list[int] = []
        self.dirs = [_Direction(impairment, impairment.seed * 2 + i) for i in range(2)]
        self._heap: list[_Held] = []
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._order = 0

    @property
    def stats(self) -> list[DirectionStats]:
        return [d.stats for d in self.dirs]

    def start(self) -> None:
        for name in self.names:
            fd = os.open(TUN, os.O_RDWR)
            fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
            self.fds.append(fd)
        self._threads = [threading.Thread(target=self._read, args=(i,), daemon=True) for i in range(2)]
        self._threads.append(threading.Thread(target=self._release, daemon=True))
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        for t in self._threads:
            t.join(5)
        for fd in self.fds:
            os.close(fd)
        self.fds = []

    def _read(self, side: int) -> None:
        fd, out, d = self.fds[side], self.fds[1 - side], self.dirs[side]
        while not self._stop.is_set():
            if not select.select([fd], [], [], 0.2)[0]:
                continue
            try:
                data = os.read(fd, 65535)
            except OSError:
                return
            if len(data) < 20 or data[0] >> 4 != 4 or data[9] != UDP:  # not IPv4 UDP: passed on at once
                self._write(out, data)
                continue
            now = time.monotonic()
            d.stats.packets += 1
            d.stats.bytes += len(data)
            due = d.due(now, data)
            if due is None:
                continue
            with self._cond:
                self._order += 1
                # ``order`` numbers arrivals: a packet released after a later arrival of its direction was reordered
                heapq.heappush(self._heap, _Held(due, self._order, data, out, d.stats))
                self._cond.notify()

    def _release(self) -> None:
        last = {id(d.stats): 0 for d in self.dirs}
        while not self._stop.is_set():
            with self._cond:
                if not self._heap:
                    self._cond.wait(0.2)
                    continue
                wait = self._heap[0].due - time.monotonic()
                if wait > 0:
                    self._cond.wait(wait)
                    continue
                held = heapq.heappop(self._heap)
            key = id(held.stats)
            if held.order < last[key]:
                held.stats.reordered += 1
            last[key] = max(last[key], held.order)
            self._write(held.out, held.data)

    @staticmethod
    def _write(fd: int, data: bytes) -> None:
        try:
            os.write(fd, data)
        except OSError:  # the device is going away (teardown)
            pass


class RelayPair(NetnsPair):
    """Namespaces ``<tag>a`` (10.231.0.1) and ``<tag>b`` (10.231.0.2), each with a TUN device carried by a
    :class:`Relay` in this process that impairs their UDP by ``impairment``; removed on exit."""

    def __init__(self, tag: str, impairment: Impairment) -> None:
        super().__init__(tag)
        self.relay = Relay(self.links, impairment)

    def _make_links(self) -> None:
        """The relay's TUN devices, opened here and moved into the namespaces."""
        self.relay.start()
        for ns, link in zip(self.names, self.links):
            _run("ip", "link", "set", link, "netns", ns)

    def __exit__(self, *exc: object) -> None:
        super().__exit__()
        self.relay.stop()
