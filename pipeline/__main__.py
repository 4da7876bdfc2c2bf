"""``python -m pipeline``: the same command line as the ``deconv-atlas`` script."""

from pipeline.cli import main

raise SystemExit(main())
