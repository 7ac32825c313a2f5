"""Loopback-only ICE: make aioice offer 127.0.0.1 as its (only) host candidate.

aioice deliberately leaves 127.0.0.1 out of the host candidates it gathers, so two peers on one machine without
another interface (CI, sandboxes, this project's tests and benchmarks) never connect. :func:`enable_loopback`
replaces aioice's host-address enumeration with one that returns 127.0.0.1 alone, which also keeps every packet on
the loopback interface. It is process-wide and explicit: the CLI calls it for ``--loopback`` or when the
environment variable ``SGANC_RTC_LOOPBACK=1`` is set; nothing enables it implicitly.
"""

from __future__ import annotations

import os

import aioice.ice

ENV_VAR = "SGANC_RTC_LOOPBACK"
LOOPBACK = "127.0.0.1"


def _loopback_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    return [LOOPBACK] if use_ipv4 else []


def enable_loopback() -> None:
    """Gather only 127.0.0.1 host candidates from now on, in this process."""
    aioice.ice.get_host_addresses = _loopback_addresses


def loopback_enabled() -> bool:
    return aioice.ice.get_host_addresses is _loopback_addresses


def loopback_requested(flag: bool = False) -> bool:
    """True when ``--loopback`` was given or ``SGANC_RTC_LOOPBACK`` is set to 1/true/yes."""
    return flag or os.environ.get(ENV_VAR, "").strip().lower() in ("1", "true", "yes")
