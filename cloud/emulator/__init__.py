"""The local emulator: moto with Step Functions execution and the activity bridge, plus an
embedded PostgreSQL standing in for Redshift (the `[emulator]` extra).

One module per concern: `hub` (activity task queues and token states), `bridge` (the patches
to moto), `postgres` (embedded PostgreSQL), `server` (moto's server and the warm-up gate),
`envfile` (the env file), `cli` (`rsql-cloud emulator`), `process` (the emulator as a child
process, for the tests and the demo). Importing this package imports neither moto nor the
PostgreSQL wheel: only `hub`, `bridge` and `server` do, when the emulator starts.
"""

from __future__ import annotations


class EmulatorError(RuntimeError):
    """The emulator could not start."""
