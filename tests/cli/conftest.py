import pytest
from fixtures import save_cli_files


@pytest.fixture(scope="session")
def files(tmp_path_factory):
    """Saved tiny original and pruned Llamas, a tiny SentenceTransformer and an Alpaca JSONL file."""
    return save_cli_files(tmp_path_factory.mktemp("cli"))
