import pytest
from transformers import HfArgumentParser

from paser_hf import PaserConfig


def test_budget_rows():
    assert PaserConfig(budget=0.2).budget_rows(2000) == 400
    assert PaserConfig(budget=0.2).budget_rows(3) == 1  # round(0.6) = 1
    assert PaserConfig(budget=0.001).budget_rows(10) == 1  # at least one row
    assert PaserConfig(budget=1.0).budget_rows(7) == 7
    assert PaserConfig(budget=1).budget_rows(7) == 1  # a Python int is a row count
    assert PaserConfig(budget=400.0).budget == 400  # whole floats above 1 are row counts
    assert PaserConfig(budget="0.25").budget_rows(8) == 2
    with pytest.raises(ValueError, match="only 5"):
        PaserConfig(budget=6).budget_rows(5)
    with pytest.raises(ValueError, match="empty"):
        PaserConfig().budget_rows(0)


@pytest.mark.parametrize("bad", [0, 0.0, -0.5, 1.5, float("nan"), "abc", True, None])
def test_bad_budgets(bad):
    with pytest.raises(ValueError, match="budget"):
        PaserConfig(budget=bad)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"dataset_format": "sharegpt"}, "dataset_format"),
        ({"clustering_method": "kmeans"}, "clustering_method"),
        ({"diffusion_dim": 0}, "diffusion_dim"),
        ({"min_clusters": 1}, "min_clusters"),
        ({"min_clusters": 5, "max_clusters": 4}, "max_clusters"),
        ({"jsd_temperature": 0}, "jsd_temperature"),
        ({"teacher_topk": -1}, "teacher_topk"),
        ({"teacher_topk": 2.5}, "teacher_topk"),
        ({"max_length": 0}, "max_length"),
        ({"concept_source": "output"}, "concept_source"),
        ({"max_concept_words": 0}, "max_concept_words"),
    ],
)
def test_validation_names_the_field(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PaserConfig(**kwargs)


def test_hf_argument_parser():
    (config,) = HfArgumentParser(PaserConfig).parse_args_into_dataclasses(
        ["--budget", "400", "--num_clusters", "6", "--no_use_concept_graph", "--jsd_temperature", "2"]
    )
    assert config.budget == 400 and isinstance(config.budget, int)
    assert config.num_clusters == 6 and config.use_concept_graph is False and config.jsd_temperature == 2.0
    (fraction,) = HfArgumentParser(PaserConfig).parse_args_into_dataclasses(["--budget", "0.05"])
    assert fraction.budget_rows(1000) == 50
    assert PaserConfig().to_dict()["budget"] == 0.2


def test_token_budget_is_a_fraction_or_a_count_of_tokens():
    config = PaserConfig(budget=0.25, budget_unit="tokens")
    assert config.budget_tokens(1000) == 250 and config.budget_for([100, 300, 600]) == 250
    assert PaserConfig(budget=400, budget_unit="tokens").budget_for([100, 300, 600]) == 400
    assert PaserConfig(budget=0.5).budget_for([100, 300, 600]) == 2  # rows: round(1.5) = 2
    with pytest.raises(ValueError, match="hold only 1000"):
        PaserConfig(budget=1001, budget_unit="tokens").budget_for([100, 300, 600])
    assert PaserConfig(budget_unit="tokens").row_costs([3, 5]).tolist() == [3, 5]
    assert PaserConfig().row_costs([3, 5]).tolist() == [1, 1]


@pytest.mark.parametrize("kwargs, message", [({"budget_unit": "samples"}, "budget_unit"),
                                             ({"allocation": "size"}, "allocation")])
def test_budget_unit_and_allocation_are_checked(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PaserConfig(**kwargs)


def test_budget_unit_and_allocation_from_the_command_line():
    (config,) = HfArgumentParser(PaserConfig).parse_args_into_dataclasses(
        ["--budget", "5000", "--budget_unit", "tokens", "--allocation", "size_cds"]
    )
    assert (config.budget, config.budget_unit, config.allocation) == (5000, "tokens", "size_cds")
