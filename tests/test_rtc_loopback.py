"""The loopback ICE patch is explicit, process-wide, and yields 127.0.0.1 only."""

from __future__ import annotations

import aioice.ice
import pytest

from sganc_stream.rtc import loopback


def test_enable_loopback_offers_only_127(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aioice.ice, "get_host_addresses", aioice.ice.get_host_addresses)  # restored afterwards
    assert not loopback.loopback_enabled()
    loopback.enable_loopback()
    assert loopback.loopback_enabled()
    assert aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=True) == ["127.0.0.1"]
    assert aioice.ice.get_host_addresses(use_ipv4=False, use_ipv6=True) == []


def test_loopback_requested_by_flag_or_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(loopback.ENV_VAR, raising=False)
    assert not loopback.loopback_requested()
    assert loopback.loopback_requested(True)
    monkeypatch.setenv(loopback.ENV_VAR, "1")
    assert loopback.loopback_requested()
    monkeypatch.setenv(loopback.ENV_VAR, "0")
    assert not loopback.loopback_requested()
