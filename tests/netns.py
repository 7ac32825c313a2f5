"""Real network conditions for call tests: two network namespaces joined by a veth pair, made by the test itself.

Loss is dropped by an nftables ``numgen random`` rule on the *receiving* namespace's input hook (on the output hook
the sender's ``sendto`` would fail with EPERM instead of the packet being lost), on UDP only, so the signaling
WebSocket (TCP) is never touched; a bandwidth cap is a ``tc`` htb token bucket with a short FIFO on the UDP a veth
sends. This kernel has no ``netem`` (nor ``prio``). Only addresses inside the namespaces are used (10.231.0.1 and 10.231.0.2). Needs root, ``ip``, ``tc``
and ``nft`` (``apt-get install nftables``); :func:`unavailable` says why not, for a skip.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

ADDRESSES = ("10.231.0.1", "10.231.0.2")


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, text=True, timeout=30)


def unavailable() -> str | None:
    """Why namespaces cannot be made here (None: they can)."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    missing = [tool for tool in ("ip", "tc", "nft") if shutil.which(tool) is None]
    if missing:
        return f"missing {', '.join(missing)} (apt-get install iproute2 nftables)"
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
        a, b = self.names
        for ns in self.names:
            _run("ip", "netns", "add", ns)
        try:
            _run("ip", "link", "add", self.links[0], "netns", a, "type", "veth", "peer", "name", self.links[1],
                 "netns", b)
            for ns, link, addr in zip(self.names, self.links, ADDRESSES):
                _run("ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", link)
                _run("ip", "-n", ns, "link", "set", link, "up")
                _run("ip", "-n", ns, "link", "set", "lo", "up")
        except BaseException:
            self.__exit__()
            raise
        return self

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
