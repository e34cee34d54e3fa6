"""Run one PASER selection on tiny models and write the outcome as JSON (used under `accelerate launch`)."""

import json
import sys

import numpy as np
from accelerate import PartialState
from datasets import Dataset
from fixtures import make_selector, planted_rows

from paser_hf import PaserConfig


def run(shard_rows: int = 5):
    config = PaserConfig(budget=0.25, num_clusters=3, show_progress=False, seed=0, scoring_shard_rows=shard_rows)
    selector = make_selector(config)
    subset = selector(Dataset.from_list(planted_rows(8)))
    return {
        "selected": [int(i) for i in selector.selected_indices_],
        "jsd": [float(x) for x in np.nan_to_num(selector.scores_["paser_jsd"])],
        "rows": len(subset),
    }


if __name__ == "__main__":
    outcome = run()
    state = PartialState()
    with open(f"{sys.argv[1]}.rank{state.process_index}", "w") as handle:
        json.dump(outcome, handle)
