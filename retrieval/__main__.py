"""``python -m retrieval ...``: the ``retrieval`` command line (see :mod:`retrieval.cli`)."""
from retrieval.cli import main

if __name__ == "__main__":
    main()
