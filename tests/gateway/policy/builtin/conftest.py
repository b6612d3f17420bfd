"""Fixtures of the built-in policies' tests."""

from __future__ import annotations

import pytest

from gateway.expressions import CompiledExpression


@pytest.fixture
def evaluations(monkeypatch):
    """The sources of the expressions evaluated as text (``CompiledExpression.to_str``: counter keys, metric
    dimensions), one entry per evaluation."""
    calls = []
    real = CompiledExpression.to_str

    def counting(self, ctx):
        calls.append(self.source)
        return real(self, ctx)

    monkeypatch.setattr(CompiledExpression, "to_str", counting)
    return calls
