"""Wall-clock seconds of the stages of a selection, for the report's ``timings``."""

from __future__ import annotations

import contextlib
import time
from typing import Dict, Iterator


class Stopwatch:
    """``with stopwatch("prepare"): ...`` records the seconds the block took; `timings()` gives them rounded."""

    def __init__(self):
        self.seconds: Dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[stage] = time.perf_counter() - start

    def timings(self) -> Dict[str, float]:
        return {stage: round(seconds, 3) for stage, seconds in self.seconds.items()}
