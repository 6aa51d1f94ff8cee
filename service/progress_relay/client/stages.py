"""Named stages as ranges of percent, as in a stage table (``parsing 10 %, fetching 30 %, ...``).

``StageTable(["upload", "transcribe", "summarize"])`` gives each stage an equal share;
``StageTable({"upload": 10, "transcribe": 80, "summarize": 100})`` gives each stage's *end*
percentage (the first starts at 0; ends must rise and stay within 0-100). Entering a stage puts
the job at the stage's start; a fraction of the stage maps into its range.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence


class StageTable:
    def __init__(self, stages: Sequence[str] | Mapping[str, float]) -> None:
        if isinstance(stages, Mapping):
            names = list(stages)
            ends = [float(stages[name]) for name in names]
        else:
            if isinstance(stages, str):
                raise TypeError("stages must be a list of names or a mapping name -> end percent")
            names = list(stages)
            ends = [100.0 * (i + 1) / len(names) for i in range(len(names))]
        if not names:
            raise ValueError("stages must name at least one stage")
        if len(set(names)) != len(names):
            raise ValueError(f"stage names must be unique: {names}")
        starts = [0.0, *ends[:-1]]
        for name, start, end in zip(names, starts, ends, strict=True):
            if not start <= end <= 100.0:
                raise ValueError(
                    f"stage {name!r} ends at {end} %: end percentages must rise within 0-100"
                )
        self.names = names
        self._ranges = {name: (s, e) for name, s, e in zip(names, starts, ends, strict=True)}

    def __contains__(self, name: object) -> bool:
        return name in self._ranges

    def start(self, name: str) -> float:
        return self.range(name)[0]

    def range(self, name: str) -> tuple[float, float]:
        try:
            return self._ranges[name]
        except KeyError:
            raise ValueError(f"unknown stage {name!r}; the stages are {self.names}") from None

    def step(self, name: str) -> int:
        """The stage's position, 1-based (sent as ``step`` of ``total_steps``)."""
        return self.names.index(name) + 1

    def percent(self, name: str, fraction: float) -> float:
        """The overall percent at ``fraction`` (clamped to 0-1) of stage ``name``."""
        start, end = self.range(name)
        return start + min(1.0, max(0.0, fraction)) * (end - start)
