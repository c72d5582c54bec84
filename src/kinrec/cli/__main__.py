"""``python -m kinrec.cli``: the same as the ``kinrec`` command."""

from kinrec.cli import main

main()
