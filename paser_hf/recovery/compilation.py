"""Regional compilation: `torch.compile` applied in place to each block of a model's repeated layers.

A decoder is a `torch.nn.ModuleList` of identical blocks; compiling the blocks instead of the whole model gives one
graph that every block reuses, so the compiler runs once per block class, not once per layer. In place matters: the
blocks stay where the model's own forward (and any wrapper around it: PEFT, trl's patched forward) calls them.
"""

from __future__ import annotations

import torch
from accelerate.utils.other import is_repeated_blocks


def repeated_blocks(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The children of every non-empty `torch.nn.ModuleList` in `model` whose children are all of one class (the
    decoder layers of a transformer; accelerate's `is_repeated_blocks`), outermost lists first; blocks inside a
    block are not listed again."""
    blocks = []
    inside = set()
    for module in model.modules():
        if id(module) not in inside and is_repeated_blocks(module):
            blocks.extend(module)
            inside.update(id(m) for block in module for m in block.modules())
    return blocks


def compile_repeated_blocks(model: torch.nn.Module, **compile_kwargs) -> int:
    """Compile each of `repeated_blocks(model)` in place (`torch.nn.Module.compile`); returns how many were."""
    blocks = repeated_blocks(model)
    for block in blocks:
        block.compile(**compile_kwargs)
    return len(blocks)
