"""The embedded demo's corpus: the same documents in every process."""
import hashlib
import os
import subprocess
import sys

from retrieval.demo import _steady


def test_per_process_text_leaves_a_docstring():
    doc = ("Draw samples.\n\n>>> X.sample(3)\narray([0.1, 0.7, 0.2])  # may vary\n"
           "Use of argument(s) ``{'weights', 'normalize', 'precenter'}`` by position is deprecated.\n"
           "A dict {'a': 1} and a set {'only'} stay as they are.")
    out = _steady(doc)
    assert "may vary" not in out and "array(" not in out and ">>> X.sample(3)" in out
    assert "``{'normalize', 'precenter', 'weights'}``" in out
    assert "{'a': 1}" in out and "{'only'}" in out


def test_the_scipy_docstrings_are_the_same_under_another_hash_seed():
    code = ("import hashlib, json; from retrieval.demo import scipy_docstrings; "
            "print(hashlib.sha256(json.dumps([(i.id, i.text) for i in scipy_docstrings()]).encode()).hexdigest())")
    digests = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                              env={**os.environ, "PYTHONHASHSEED": seed}).stdout.strip() for seed in ("1", "2")}
    assert len(digests) == 1 and len(digests.pop()) == len(hashlib.sha256().hexdigest())
