"""``python -m torchopt_review.review``: see :mod:`torchopt_review.review.cli`."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
