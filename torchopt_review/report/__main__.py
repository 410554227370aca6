"""``python -m torchopt_review.report runs/<experiment> [--no-plots]``."""

import sys

from .cli import main

sys.exit(main())
