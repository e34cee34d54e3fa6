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
