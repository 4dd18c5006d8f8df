"""``python -m drip.cli``: the ``drip`` command."""

from drip.cli.main import main

main()
