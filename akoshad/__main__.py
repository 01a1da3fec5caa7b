"""``python -m akoshad``."""

import sys

from akoshad.cli import main

sys.exit(main())
