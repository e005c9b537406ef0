import os
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def gguf() -> pathlib.Path:
    p = os.environ.get("HYPERLLAMA_TEST_MODEL")
    assert p, "set HYPERLLAMA_TEST_MODEL (scripts/setup.sh prints it)"
    path = pathlib.Path(p)
    assert path.exists(), path
    return path
