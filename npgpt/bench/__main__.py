"""``python -m npgpt.bench --worker SPEC``: one bench measurement in a fresh process (see workers.py)."""

import sys

from .workers import main

sys.exit(main(sys.argv[1:]))
