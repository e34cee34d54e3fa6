"""What the benchmarks share: where the data and results live, running a variant in a fresh process, peak RSS,
and the texts several benchmarks read (a WikiText-2 prefix, seeded calibration rows).

The data is read at run time, never copied into the repository: `../shared/data` next to the repository, or the
folder in `$PASER_BENCHMARK_DATA`. A script imports this module as `harness` (its own folder is on `sys.path`
when run as `python benchmarks/<name>.py`).
"""

from __future__ import annotations

import json
import os
import random
import re
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
DATA = Path(os.environ.get("PASER_BENCHMARK_DATA") or REPO.parent / "shared" / "data")
MIX_TRAIN = DATA / "instruct" / "mix_train.jsonl"
ALPACA_5000 = DATA / "instruct" / "alpaca_5000.jsonl"
WIKITEXT2_TEST = DATA / "lm" / "wikitext-2-raw" / "wiki.test.raw"
MC_DIR = DATA / "mc"


def peak_rss_gib() -> float:
    """Peak resident memory of this process so far, in GiB: VmHWM of /proc/self/status on Linux, else `ru_maxrss`.

    Not `ru_maxrss` on Linux: a child started by `subprocess` inherits its parent's high-water mark there (measured:
    a child of a parent holding 2 GiB reported 2.01 GiB from `ru_maxrss` and 13 MiB from VmHWM), which made the
    `run_child` peaks of a parent that holds models read as the parent's."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


class PeakRss:
    """Peak resident memory of this process inside a ``with`` block: ``baseline`` (bytes on entry) and ``peak``
    (bytes). On Linux the kernel's high-water mark (VmHWM), reset on entry by writing 5 to /proc/self/clear_refs;
    elsewhere sampled every 2 ms by a thread (needs psutil). The sampling thread took 5-10% of a LoRA step's wall
    time on 2 cores, which the forward it is compared with did not pay."""

    STATUS = Path("/proc/self/status")

    def __init__(self):
        self.baseline = self.peak = 0
        self.kernel = False
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.sample, daemon=True)

    @staticmethod
    def reset_high_water_mark() -> bool:
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            return False
        return PeakRss.STATUS.exists()

    def status_bytes(self, field: str) -> int:
        match = re.search(rf"^{field}:\s+(\d+) kB", self.STATUS.read_text(), re.MULTILINE)
        return int(match.group(1)) * 1024

    def rss(self) -> int:
        if self.kernel:
            return self.status_bytes("VmRSS")
        import psutil

        return psutil.Process().memory_info().rss

    def sample(self):
        while not self.done.is_set():
            self.peak = max(self.peak, self.rss())
            time.sleep(0.002)

    def __enter__(self):
        self.kernel = self.reset_high_water_mark()
        self.baseline = self.peak = self.rss()
        if not self.kernel:
            self.thread.start()
        return self

    def __exit__(self, *_):
        if self.kernel:
            self.peak = max(self.baseline, self.status_bytes("VmHWM"))
            return
        self.done.set()
        self.thread.join()


def step_timer():
    """A `transformers.TrainerCallback` that records the wall-clock (``times``) and process CPU seconds
    (``cpu_times``) of each optimizer step (CPU time is steadier on a shared machine)."""
    from transformers import TrainerCallback

    class StepTimes(TrainerCallback):
        def __init__(self):
            self.times, self.cpu_times, self.start = [], [], None

        def on_step_begin(self, *_, **__):
            self.start = (time.perf_counter(), time.process_time())

        def on_step_end(self, *_, **__):
            self.times.append(time.perf_counter() - self.start[0])
            self.cpu_times.append(time.process_time() - self.start[1])

    return StepTimes()


def long_rows(count: int, max_length: int, offset: int = 0, path: Path = MIX_TRAIN):
    """`count` rows of `path` from the `offset`-th on, among those with at least 6 characters per token of
    `max_length` (instruction + input + output), so each one fills `max_length` tokens."""
    from datasets import load_dataset

    data = load_dataset("json", data_files=str(path), split="train")
    data = data.filter(lambda r: len(r["instruction"]) + len(r["input"] or "") + len(r["output"]) >= 6 * max_length)
    return data.select(range(offset, offset + count))


def run_child(script, *args: str) -> dict:
    """Run `python script args` in a fresh process, so its peak RSS is its own, and return the JSON object it
    printed on its last stdout line (`emit`). Exits with the child's stderr tail if it fails."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        sys.exit(f"{Path(script).name} {' '.join(args)} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def emit(result: dict) -> None:
    """The child's side of `run_child`: print `result` as the last stdout line."""
    print(json.dumps(result), flush=True)


def wikitext_prefix(tokenizer, tokens: int, path: Path = WIKITEXT2_TEST) -> str:
    """The leading part of the WikiText-2 test text that tokenises to about `tokens` tokens."""
    text = path.read_text(encoding="utf-8")
    offsets = tokenizer(text, return_offsets_mapping=True)["offset_mapping"]
    return text if len(offsets) <= tokens else text[: offsets[tokens][0]]


def calibration_texts(count: int, path: Path = ALPACA_5000, seed: int = 0) -> list[str]:
    """`count` rows of a JSONL file drawn with `random.Random(seed)` (the sample behind the committed results),
    as `paser_hf.pruning.sample_calibration_texts` writes them."""
    from datasets import Dataset

    from paser_hf.pruning import sample_calibration_texts

    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return sample_calibration_texts(Dataset.from_list(random.Random(seed).sample(rows, count)))
