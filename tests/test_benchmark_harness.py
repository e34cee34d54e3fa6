"""benchmarks/harness.py: a child process's peak memory is its own, not its parent's."""

import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="VmHWM is Linux's")
def test_a_child_peak_does_not_inherit_the_parent_memory(tmp_path):
    sys.path.insert(0, str(BENCHMARKS))
    try:
        from harness import run_child
    finally:
        sys.path.remove(str(BENCHMARKS))
    held = bytearray(512 * 2**20)
    held[:: 4096] = b"\x01" * len(held[:: 4096])
    child = tmp_path / "child.py"
    child.write_text(
        f"import sys\nsys.path.insert(0, {str(BENCHMARKS)!r})\n"
        "from harness import emit, peak_rss_gib\nemit({'peak': peak_rss_gib()})\n"
    )
    peak = run_child(child)["peak"]
    assert held[0] == 1
    assert 0 < peak < 0.25


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="the high-water-mark reset is Linux's")
def test_peak_rss_counts_the_block_and_not_what_came_before(tmp_path):
    """256 MiB touched and freed before the block, 128 MiB inside it: the peak counts the 128 only."""
    child = tmp_path / "child.py"
    child.write_text(
        f"import sys\nsys.path.insert(0, {str(BENCHMARKS)!r})\n"
        "from harness import PeakRss, emit\n"
        "def touch(mib):\n"
        "    block = bytearray(mib * 2**20)\n"
        "    block[::4096] = b'\\x01' * len(block[::4096])\n"
        "    return block[0]\n"
        "touch(256)\n"
        "with PeakRss() as rss:\n"
        "    touch(128)\n"
        "emit({'kernel': rss.kernel, 'delta_mib': (rss.peak - rss.baseline) / 2**20})\n"
    )
    sys.path.insert(0, str(BENCHMARKS))
    try:
        from harness import run_child
    finally:
        sys.path.remove(str(BENCHMARKS))
    result = run_child(child)
    assert result["kernel"] and 120 < result["delta_mib"] < 160
