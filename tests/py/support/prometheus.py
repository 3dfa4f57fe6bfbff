"""Reading a /metrics scrape (Prometheus text format) in tests."""

from __future__ import annotations

import re

SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})? (?P<value>\S+)$")


def samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    parsed = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = SAMPLE.match(line)
        assert match, f"not Prometheus text format: {line!r}"
        labels = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match["labels"] or ""))
        parsed.append((match["name"], labels, float(match["value"])))
    return parsed


def value(parsed: list[tuple[str, dict[str, str], float]], name: str, **labels: str) -> float:
    """The sum of the samples of `name` whose labels include `labels` (0 when none)."""
    return sum(v for n, found, v in parsed if n == name and labels.items() <= found.items())
