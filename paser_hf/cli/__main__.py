"""`python -m paser_hf.cli`: the `paser` command."""

import sys

from . import main

sys.exit(main())
