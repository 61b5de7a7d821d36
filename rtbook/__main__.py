"""Allow ``python -m rtbook``."""

import sys

from rtbook.cli import main

sys.exit(main())
