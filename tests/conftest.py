import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def local_task(tmp_path_factory):
    """The folder of a local lm-eval task YAML, `tiny_mc` (shared, so lm-eval indexes its tasks once a session)."""
    from fixtures import write_local_task

    return write_local_task(tmp_path_factory.mktemp("lm_eval_tasks"))
