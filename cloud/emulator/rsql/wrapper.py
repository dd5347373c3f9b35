"""The `rsql` command the emulator puts on the PATH of its env file: a small sh script in the
data directory that runs this package with the emulator's own Python. It is written there, not
installed as a console script, so that no host that installs the agent gets a second `rsql`
ahead of the real client."""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path


def install(bin_dir: Path) -> Path:
    """Write `bin_dir/rsql` (mode 0755, replaced atomically) and return its path."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    path = bin_dir / "rsql"
    text = (
        "#!/bin/sh\n"
        "# The rsql-agent emulator's local rsql (docs/rsql-local.md).\n"
        f'exec {shlex.quote(sys.executable)} -m cloud.emulator.rsql "$@"\n'
    )
    tmp = path.with_name(".rsql.tmp")
    tmp.write_text(text)
    tmp.chmod(0o755)
    os.replace(tmp, path)
    return path
