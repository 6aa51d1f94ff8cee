"""Medians of the runs, one table per scenario with the ratios to both peers, markdown + JSON."""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bench.scenarios import SCENARIOS, Metric, Metrics

PEERS = ("nchan", "naive")
COLUMNS = ("progress-relay", "nchan", "naive")

# scenario -> server -> the metrics of each run
Results = dict[str, dict[str, list[Metrics]]]


def medians(runs: Sequence[Metrics]) -> Metrics:
    """The median of every numeric metric over the runs; text metrics from the worst run."""
    merged: Metrics = {}
    keys = {key for run in runs for key in run}
    for key in sorted(keys):
        values = [run[key] for run in runs if key in run]
        numbers = [v for v in values if isinstance(v, int | float) and not math.isnan(v)]
        if numbers:
            merged[key] = statistics.median(numbers)
        else:
            merged[key] = sorted(str(v) for v in values)[-1]
    return merged


def _cell(value: Any, metric: Metric) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, str):
        return value
    if isinstance(value, float) and math.isnan(value):
        return "n/a"
    if metric.digits == 0 and abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{metric.digits}f}"


def _ratio(relay: Any, peer: Any, metric: Metric) -> str:
    if metric.better == "zero":
        return ""
    if not isinstance(relay, int | float) or not isinstance(peer, int | float):
        return "n/a"
    if math.isnan(relay) or math.isnan(peer) or peer == 0:
        return "n/a"
    return f"{relay / peer:.2f}x"


def table(scenario: str, summary: Mapping[str, Metrics], runs: int) -> str:
    metrics = SCENARIOS[scenario].metrics
    lines = [
        f"### {scenario} (median of {runs} run{'s' if runs != 1 else ''})",
        "",
        "| metric | progress-relay | nchan | naive | relay/nchan | relay/naive |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for metric in metrics:
        values = [summary.get(server, {}).get(metric.key) for server in COLUMNS]
        if all(v is None for v in values):
            continue
        cells = [_cell(v, metric) for v in values]
        ratios = [_ratio(values[0], values[i], metric) for i in (1, 2)]
        arrow = {"higher": " ↑", "lower": " ↓", "zero": " (must be 0)"}[metric.better]
        lines.append(f"| {metric.label}{arrow} | {' | '.join(cells)} | {' | '.join(ratios)} |")
    complete = [
        f"{server}: {summary[server]['complete']}"
        for server in COLUMNS
        if server in summary and summary[server].get("complete", "yes") != "yes"
    ]
    if complete:
        lines += ["", "Not complete within the time limit: " + "; ".join(complete)]
    return "\n".join(lines)


def render(results: Results, runs: int) -> tuple[str, dict[str, Any]]:
    summary = {
        scenario: {server: medians(r) for server, r in per_server.items()}
        for scenario, per_server in results.items()
    }
    tables = [table(scenario, summary[scenario], runs) for scenario in results]
    legend = (
        "↑ higher is better, ↓ lower is better; ratios are progress-relay ÷ peer "
        "(n/a: the peer cannot do it — the naive relay has no resume — or does not run it)."
    )
    return "\n\n".join([*tables, legend]), summary


def correctness_failures(summary: Mapping[str, Mapping[str, Metrics]]) -> list[str]:
    failures = []
    for scenario, per_server in summary.items():
        for server, metrics in per_server.items():
            for key in ("lost", "undelivered", "duplicates"):
                if metrics.get(key, 0) != 0:
                    failures.append(f"{scenario}/{server}: {key} = {metrics[key]}")
    return failures


def write(
    directory: Path,
    stem: str,
    markdown: str,
    summary: Mapping[str, Any],
    meta: Mapping[str, Any],
    runs: Results,
) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    md_path = directory / f"{stem}.md"
    json_path = directory / f"{stem}.json"
    header = "\n".join(f"- {key}: {value}" for key, value in meta.items())
    md_path.write_text(f"# progress-relay bench {stem}\n\n{header}\n\n{markdown}\n")
    json_path.write_text(
        json.dumps({"meta": meta, "medians": summary, "runs": runs}, indent=2) + "\n"
    )
    return md_path, json_path
