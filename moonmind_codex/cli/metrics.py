"""The fleet's status as Prometheus metrics: the text exposition, and a node_exporter textfile.

:func:`moonmind_codex.core.fleet_status.metric_families` decides what is measured; this module only
hands those families to ``prometheus_client`` through a collector on a registry of its own (no
process or platform metrics of the CLI itself) and writes the result.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from moonmind_codex.core.fleet_status import MetricFamily

TEXTFILE_MODE = 0o644


class FleetCollector(Collector):
    """Yields the given families as gauges, as they are (collected once per exposition)."""

    def __init__(self, families: Sequence[MetricFamily]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        for family in self.families:
            gauge = GaugeMetricFamily(family.name, family.help, labels=list(family.labels))
            for sample in family.samples:
                gauge.add_metric([value for _, value in sample.labels], sample.value)
            yield gauge


def exposition(families: Sequence[MetricFamily]) -> str:
    """The Prometheus text exposition format (0.0.4) of ``families``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FleetCollector(families))
    return generate_latest(registry).decode("utf-8")


def write_textfile(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically, mode 0644, for node_exporter's textfile collector.

    The temporary file sits in the same directory (a rename within one file system) and does
    not end in ``.prom``, so the collector never reads half a file.
    """
    descriptor, temporary = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"
    )
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
            os.fchmod(stream.fileno(), TEXTFILE_MODE)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
