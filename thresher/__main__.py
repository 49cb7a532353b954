"""``python -m thresher``: the command line."""

import sys

from thresher.pipeline.cli import main

sys.exit(main())
