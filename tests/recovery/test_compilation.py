"""Regional compilation: which blocks are found, and that compiling them in place keeps the model's outputs."""

import torch
from fixtures import tiny_llama

from paser_hf.recovery.compilation import compile_repeated_blocks, repeated_blocks


class Nested(torch.nn.Module):
    """Two lists of identical blocks, one holding lists of its own, and a list of mixed modules."""

    def __init__(self):
        super().__init__()
        self.outer = torch.nn.ModuleList(
            torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ModuleList([torch.nn.ReLU(), torch.nn.ReLU()]))
            for _ in range(3)
        )
        self.mixed = torch.nn.ModuleList([torch.nn.Linear(2, 2), torch.nn.ReLU()])
        self.empty = torch.nn.ModuleList()


def test_repeated_blocks_are_the_decoder_layers():
    model = tiny_llama(layers=3)
    assert repeated_blocks(model) == list(model.model.layers)


def test_blocks_inside_a_block_and_mixed_lists_are_not_listed():
    model = Nested()
    assert repeated_blocks(model) == list(model.outer)


def test_compiled_blocks_give_the_same_outputs():
    model = tiny_llama(layers=2)
    ids = torch.randint(3, 200, (2, 7))
    with torch.no_grad():
        want = model(input_ids=ids).logits
        assert compile_repeated_blocks(model, backend="eager", dynamic=True) == 2
        got = model(input_ids=ids).logits
    assert all(layer._compiled_call_impl is not None for layer in model.model.layers)
    torch.testing.assert_close(got, want)
