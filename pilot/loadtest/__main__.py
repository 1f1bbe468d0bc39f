import sys

from pilot.loadtest.cli import main

sys.exit(main())
