"""``python -m npgpt.cli``: the ``npgpt`` command."""

from . import main

main()
