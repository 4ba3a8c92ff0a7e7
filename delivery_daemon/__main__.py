import sys

from delivery_daemon.cli import main

sys.exit(main())
