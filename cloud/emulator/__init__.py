"""The local emulator: moto with Step Functions execution and the activity bridge, plus an
embedded PostgreSQL standing in for Redshift. Only usable with the `[emulator]` extra.

One module per concern: `hub` (activity task queues and token states), `bridge` with
`patches_interpreter` and `patches_api` (the patches to moto, one function per gap), `postgres`
(embedded PostgreSQL), `server` (moto's server and the warm-up gate), `envfile` (the env file),
`cli` (`rsql-cloud emulator`), `process` (the emulator as a child process, for the tests and
the demo), `faultproxy` (a TCP proxy that cuts, slows and resets connections to it). Importing
this package, `cli` or `process` imports neither moto nor the PostgreSQL wheel: `hub`,
`bridge` and its patches do, once the emulator starts.
"""

from __future__ import annotations

import importlib.util
from typing import Final

# What the extra brings that a host install (`pip install .`) lacks; import names.
_EXTRA_MODULES: Final = ("moto", "werkzeug", "pgserver", "psutil")
INSTALL_HINT: Final = "pip install 'rsql-agent[emulator]'"


class EmulatorError(RuntimeError):
    """The emulator could not start."""


def missing_extra() -> str | None:
    """One line saying what to install when the `[emulator]` extra is missing, else None."""
    missing = [name for name in _EXTRA_MODULES if importlib.util.find_spec(name) is None]
    if not missing:
        return None
    return (
        f"the emulator needs the [emulator] extra ({', '.join(missing)} not installed): "
        f"{INSTALL_HINT}"
    )
