"""lm-evaluation-harness tasks on models already in memory (the optional extra ``paser-hf[lm-eval]``).

`load_tasks` builds lm-eval tasks once (its built-in ones, e.g. ``arc_easy``, and task YAMLs of your own under an
``include_path``); `lm_eval_scores` runs ``lm_eval.simple_evaluate`` on a model object through lm-eval's ``HFLM``
wrapper and flattens the results to ``{"task/metric": value}``, the columns `paser evaluate` puts beside
perplexity and multiple-choice accuracy. Built-in tasks read their data from the Hub; offline, give a task YAML
with ``dataset_path: json`` and a local ``dataset_kwargs.data_files`` instead.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Optional

INSTALL_HINT = "lm-eval tasks need the optional extra: pip install 'paser-hf[lm-eval]'"


def _lm_eval():
    try:
        import lm_eval
    except ImportError as exc:
        raise ImportError(INSTALL_HINT) from exc
    return lm_eval


@functools.lru_cache(maxsize=4)
def _task_manager(include_path: Optional[str]):
    """lm-eval's index of its tasks and of those under `include_path` (built once: it reads every task YAML)."""
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=include_path)


def load_tasks(names: Sequence[str], include_path: Optional[str] = None) -> list:
    """The lm-eval task objects named by `names` (a group gives its tasks); `include_path` is a folder of task YAMLs searched
    before lm-eval's own. An unknown name, or a task whose Hub data cannot be reached, raises one line saying
    what to do."""
    lm_eval = _lm_eval()
    if not names:
        raise ValueError("no lm-eval task named; give e.g. --lm_eval_tasks arc_easy,hellaswag")
    manager = _task_manager(include_path)
    tasks = []
    for name in names:
        try:
            loaded = manager.load([name])
        except KeyError as exc:
            where = f" nor a task YAML under {include_path}" if include_path else ""
            raise ValueError(f"{name!r} is not an lm-eval {lm_eval.__version__} task, group or tag{where}; list "
                             "them with `lm-eval ls tasks`, or pass the folder of your task YAML with "
                             "--lm_eval_include_path") from exc
        except ConnectionError as exc:
            raise ValueError(f"lm-eval task {name!r} reads its data from the Hub, which cannot be reached "
                             f"({exc}); run it once online to fill the datasets cache, or write a task YAML with "
                             "`dataset_path: json` and a local `dataset_kwargs: {data_files: ...}` and pass its "
                             "folder with --lm_eval_include_path") from exc
        tasks.extend(loaded["tasks"].values())
    return tasks


def lm_eval_scores(model, tokenizer, tasks: Sequence, batch_size: int = 8, limit: Optional[int] = None,
                   num_fewshot: Optional[int] = None) -> dict:
    """``{"task/metric": value}`` of `model` on `tasks` (names or objects from `load_tasks`), scored by
    ``lm_eval.simple_evaluate``; standard errors are left out (no bootstrap). `limit` scores the first N documents
    of each task."""
    _lm_eval()
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    names = [task for task in tasks if isinstance(task, str)]
    built = (load_tasks(names) if names else []) + [task for task in tasks if not isinstance(task, str)]
    wrapped = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    # the tasks are built already: an empty manager spares simple_evaluate indexing every lm-eval task again
    output = simple_evaluate(wrapped, tasks=built, limit=limit, num_fewshot=num_fewshot, bootstrap_iters=0,
                             log_samples=False, task_manager=TaskManager(include_defaults=False))
    scores = {}
    for task, metrics in output["results"].items():
        for key, value in metrics.items():
            metric, _, filter_name = key.partition(",")
            if isinstance(value, (int, float)) and not isinstance(value, bool) and "_stderr" not in metric and \
                    metric != "sample_len":
                suffix = "" if filter_name in ("", "none") else f"[{filter_name}]"
                scores[f"{task}/{metric}{suffix}"] = value
    return scores
