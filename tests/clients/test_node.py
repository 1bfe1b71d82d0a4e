"""The harness itself: where Node is missing, the client tests skip and say why."""

from __future__ import annotations

import shutil

import pytest

from . import _node


def test_skips_with_its_reason_without_node(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(pytest.skip.Exception, match=r"Node\.js and npm are needed"):
        _node.installed_clients()
