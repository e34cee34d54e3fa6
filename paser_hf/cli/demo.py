"""`paser demo`: the offline demo pipeline of `paser_hf.demo` (prune, select, recover, evaluate), its table printed."""

from __future__ import annotations

from ..demo import DemoConfig, run_demo
from .common import Command


def run_demo_command(config: DemoConfig) -> None:
    result = run_demo(config)
    print(result.table())
    print(f"results: {result.output_dir}/demo_results.json")


COMMAND = Command("demo", "prune -> PASER select -> LoRA recover -> evaluate, offline on built-in defaults",
                  (DemoConfig,), run_demo_command)
