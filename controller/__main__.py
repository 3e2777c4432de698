"""`python -m controller`: the Ryu controller with the NetServ app (see `controller/entry.py`)."""

import sys

from controller.entry import main

sys.exit(main())
