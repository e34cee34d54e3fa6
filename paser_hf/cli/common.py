"""What every `paser` command shares: its parser (the fields of its dataclasses plus ``--config FILE.yaml``), the
error contract (one line on stderr, ``paser: error: ...``, exit status 2) and loading the models it names."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from trl import TrlParser

DTYPES = ["float32", "bfloat16", "float16"]


@dataclass(frozen=True)
class Command:
    """A sub-command: its name, one-line help, the dataclasses its options come from, the function run with their
    parsed instances, and a function giving the option defaults that differ from the dataclasses'."""

    name: str
    help: str
    arguments: tuple
    run: Callable
    defaults: Callable[[], dict] = dict


class OneLineErrors(argparse.ArgumentParser):
    """Parse errors are one line on stderr, `paser: error: ...`, and exit status 2."""

    def error(self, message):
        self.exit(2, f"paser: error: {message} (see `{self.prog} --help`)\n")


class CommandParser(OneLineErrors, TrlParser):
    """The parser of one sub-command: its dataclasses' fields, and `--config FILE.yaml` listed in the help."""

    def __init__(self, dataclass_types=(), **kwargs):
        super().__init__(dataclass_types=dataclass_types, **kwargs)
        self.add_argument("--config", metavar="FILE.yaml", help="Read these options from a YAML file; options "
                          "given on the command line override it. An `env:` mapping sets environment variables.")

    def parse(self, argv):
        """The dataclass instances, `--config` applied."""
        return self.parse_args_and_config(argv)[: len(self.dataclass_types)]


def command_parser(command: Command) -> CommandParser:
    """The parser of `command`, its defaults set (and options with a default no longer required)."""
    defaults = command.defaults()
    parser = CommandParser(command.arguments, prog=f"paser {command.name}", description=command.help,
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.set_defaults(**defaults)
    for action in parser._actions:
        if action.dest in defaults:
            action.required = False
    return parser


def run_command(command: Command, argv) -> int:
    """Parse `argv` for `command` and run it; the exit status (2 after a one-line `paser: error: ...`)."""
    try:
        command.run(*command_parser(command).parse(list(argv)))
    except (ValueError, TypeError, OSError, ImportError) as exc:
        if os.environ.get("PASER_HF_TRACEBACK"):
            raise
        print(f"paser: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("paser: interrupted", file=sys.stderr)
        return 130
    return 0


def device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def check_model(spec: Optional[str], what: str) -> None:
    """Say on stderr which model `what` is (`None`: the built-in default); a missing local folder, or one that holds
    no causal LM (`paser_hf.models.check_causal_lm`), is a one-line error before anything is loaded."""
    from ..models import DEFAULT_MODEL_NAME, check_causal_lm, looks_like_path

    if spec is None:
        print(f"{what}: {DEFAULT_MODEL_NAME} (built-in offline default)", file=sys.stderr)
        return
    if looks_like_path(spec) and not Path(spec).expanduser().exists():
        raise FileNotFoundError(f"{what} {spec}: no such folder")
    check_causal_lm(spec)
    print(f"{what}: {spec}", file=sys.stderr)


def load_model(spec: Optional[str], dtype: str, what: str):
    """(model on the device, tokenizer) of `spec`; dtype ``auto`` is the fastest on the device (`fastest_dtype`)."""
    from ..models import fastest_dtype, load_model_and_tokenizer

    check_model(spec, what)
    on = device()
    if dtype == "auto":
        dtype = fastest_dtype(on)
        print(f"{what}: dtype auto -> {dtype} on {on}", file=sys.stderr)
    model, tokenizer = load_model_and_tokenizer(spec, dtype=dtype)
    return model.to(on), tokenizer
