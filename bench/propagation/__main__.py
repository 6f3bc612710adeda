"""``python -m bench.propagation``."""

from .run import main

raise SystemExit(main())
