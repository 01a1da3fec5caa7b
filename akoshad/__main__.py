"""``python -m akoshad``."""

import sys

from akoshad.entry import main

sys.exit(main())
