"""Reading the Prometheus text exposition in the /metrics tests (prometheus_client's own parser)."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families


def families(text: str) -> dict[str, list]:
    """family name -> samples."""
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def value(samples: list, name: str, **labels: str) -> float | None:
    """The value of the sample ``name`` with exactly ``labels``; None when there is none."""
    for sample in samples:
        if sample.name == name and sample.labels == labels:
            return sample.value
    return None
