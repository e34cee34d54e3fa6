"""The `paser` command line: select, teacher-logits, recover, prune, evaluate and demo, one module per command.

Each sub-command's options are the fields of the dataclasses the Python API uses (`PaserConfig`, `RecoveryConfig`,
trl's `ModelConfig`, and the argument classes of the command modules), parsed by `trl.TrlParser`, so
``--config file.yaml`` sets any of them (the command line wins). Mistakes in the input end in one line on stderr,
``paser: error: ...``, and exit status 2; set ``PASER_HF_TRACEBACK=1`` to see the traceback instead.
"""

from __future__ import annotations

import argparse
import sys

from .. import __version__
from .common import OneLineErrors, run_command


def commands() -> dict:
    """name -> `Command`, in the order of the help. The command modules are imported here, not with the package,
    so that `python -m paser_hf.cli.recover` runs a module that is not imported yet."""
    from . import demo, evaluate, prune, recover, select, teacher_logits

    modules = (select, teacher_logits, recover, prune, evaluate, demo)
    return {module.COMMAND.name: module.COMMAND for module in modules}


def top_parser(known: dict) -> argparse.ArgumentParser:
    """`paser --help` and `paser --version`: the list of commands."""
    listing = "\n".join(f"  {name:<16}{command.help}" for name, command in known.items())
    parser = OneLineErrors(
        prog="paser",
        description="PASER (arXiv 2502.12594): post-training data selection for pruned-LLM recovery.",
        epilog=f"commands:\n{listing}\n\nRun `paser COMMAND --help` for the options of a command.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", choices=list(known), metavar="COMMAND", help="one of: " + ", ".join(known))
    parser.add_argument("--version", action="version", version=f"paser-hf {__version__}")
    return parser


def main(argv=None) -> int:
    """Entry point of the `paser` command."""
    argv = list(sys.argv[1:] if argv is None else argv)
    known = commands()
    if not argv or argv[0].startswith("-"):
        top_parser(known).parse_args(argv or ["--help"])
    name = argv[0]
    if name not in known:
        top_parser(known).error(f"unknown command {name!r}; choose from {', '.join(known)}")
    return run_command(known[name], argv[1:])
