"""``python -m recall_dask`` is ``recall-dask``."""

import sys

from recall_dask.cli import main

sys.exit(main())
