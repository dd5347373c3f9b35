"""`python -m cloud.emulator`: what `EmulatorProcess` runs; the same as `rsql-cloud emulator`."""

import sys

from cloud.emulator.cli import main

sys.exit(main())
