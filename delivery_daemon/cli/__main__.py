"""``python -m delivery_daemon.cli``: the same as the ``delivery-daemon`` command."""

import sys

from delivery_daemon.cli import main

sys.exit(main())
