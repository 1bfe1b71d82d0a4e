"""``python -m triact``: the same as the ``triact`` command."""

from .cli import main

raise SystemExit(main())
