"""``python -m npgpt``: the ``npgpt`` command."""

from .cli import main

main()
