"""Reading /metrics as Prometheus does: the text parsed by prometheus_client's parser, not searched."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a scrape by (name, labels); a text that does not parse raises ValueError."""
    found: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = (sample.name, frozenset(sample.labels.items()))
            assert key not in found, f"sample {key} twice in one scrape"
            found[key] = sample.value
    return found


def value(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample, None when the scrape has none by that name and labels."""
    return samples(text).get((name, frozenset(labels.items())))


def types(text: str) -> dict[str, str]:
    """Each family's TYPE, by the family name as written after # TYPE."""
    found: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            found[name] = kind
    return found
