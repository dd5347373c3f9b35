"""`python -m cloud.emulator.rsql`: what the emulator's `rsql` wrapper runs."""

from __future__ import annotations

import sys

from cloud.emulator.rsql.cli import main

sys.exit(main())
