"""`python -m nodes`: a node agent (see `nodes/main.py`)."""

import sys

from nodes.main import main

sys.exit(main())
