"""``python -m chronolog`` runs the command line."""

import sys

from chronolog.cli import main

sys.exit(main())
