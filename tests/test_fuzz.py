"""Generated bad inputs at the readers and the CLI: no traceback, no silent loss (issue 12).

The quick run here (360 inputs, under a minute) runs in CI; the long run is
``python benchmarks/fuzz.py``. Every case is reproducible from
``RETRIEVAL_FUZZ_SEED`` and its number, which failure messages name.
"""
from __future__ import annotations

import os
import shutil

import pytest

from fuzz_inputs import run_commands, run_readers

SEED = int(os.environ.get("RETRIEVAL_FUZZ_SEED", "0"))
READER_CASES = 300
CLI_CASES = 60


def test_readers_survive_generated_inputs(tmp_path):
    outcomes, failures = run_readers(SEED, READER_CASES, tmp_path)
    assert not failures, f"{len(failures)} of {READER_CASES} inputs failed:\n" + "\n".join(failures[:20])
    # The generator must reach both outcomes, or it tests nothing.
    read = sum(n for key, n in outcomes.items() if key.startswith("read"))
    assert 20 < read < READER_CASES - 20, outcomes


@pytest.fixture(scope="module")
def fuzz_home(tmp_path_factory, built_docs, built_images):
    """Copies of the tiny document and image indexes the commands may damage."""
    home = tmp_path_factory.mktemp("fuzz") / "home"
    for store, name, _ in (built_docs, built_images):
        shutil.copytree(store.path(name), home / name)
    return home, built_docs[1], built_images[1]


def test_cli_survives_generated_commands(tmp_path, fuzz_home):
    home, docs, images = fuzz_home
    outcomes, failures = run_commands(SEED + 1, CLI_CASES, tmp_path, home, docs, images)
    assert not failures, f"{len(failures)} of {CLI_CASES} commands failed:\n" + "\n".join(failures[:20])
    ok = sum(n for key, n in outcomes.items() if key.endswith("exit 0"))
    assert 3 <= ok <= CLI_CASES - 3, outcomes
