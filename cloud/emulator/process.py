"""The emulator as a child process in its own process group, for the tests and the demo."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

from cloud.emulator import EmulatorError
from cloud.emulator.envfile import CLIENT_ENV, PID_KEY, read_env_file


class EmulatorProcess:
    """The emulator as a child process in its own process group, for tests and the demo.

    >>> with EmulatorProcess(tmp_path) as emu:
    ...     boto3.client("stepfunctions", endpoint_url=emu.endpoint_url, ...)

    `env` holds the env file's values once `start()` returns.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int = 0,
        env_file: Path | None = None,
        script_dir: Path | None = None,
        stack_name: str | None = None,
        extra_env: dict[str, str] | None = None,
        start_timeout_s: float = 60.0,
        fault_rate: float = 0.0,
        fault_seed: int | None = None,
    ) -> None:
        self.data_dir = data_dir.absolute()
        self.env_file = (env_file or self.data_dir / "env").absolute()
        self.port = port
        self.script_dir = script_dir
        self.stack_name = stack_name
        self.extra_env = extra_env or {}
        self.start_timeout_s = start_timeout_s
        # A share of the agents' calls answered ThrottlingException / HTTP 500 (see faults.py).
        self.fault_rate = fault_rate
        self.fault_seed = fault_seed
        self.env: dict[str, str] = {}
        self._proc: subprocess.Popen[bytes] | None = None
        self._stdout: IO[bytes] | None = None
        self._stderr: IO[bytes] | None = None

    @property
    def endpoint_url(self) -> str:
        return self.env["AWS_ENDPOINT_URL"]

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def stderr_path(self) -> Path:
        return self.data_dir / "emulator.stderr"

    def start(self) -> EmulatorProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        argv = [
            sys.executable,
            "-m",
            "cloud.emulator",
            "--port",
            str(self.port),
            "--data-dir",
            str(self.data_dir),
            "--env-file",
            str(self.env_file),
        ]
        if self.script_dir is not None:
            argv += ["--script-dir", str(self.script_dir)]
        if self.stack_name is not None:
            argv += ["--stack-name", self.stack_name]
        if self.fault_rate:
            argv += ["--fault-rate", str(self.fault_rate)]
        if self.fault_seed is not None:
            argv += ["--fault-seed", str(self.fault_seed)]
        # Output to files, not pipes: a pipe nobody reads fills up and blocks the emulator.
        self._stdout = open(self.data_dir / "emulator.stdout", "ab")  # noqa: SIM115
        self._stderr = open(self.stderr_path, "ab")  # noqa: SIM115
        self._proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=self._stdout,
            stderr=self._stderr,
            env={**os.environ, **CLIENT_ENV, **self.extra_env},
            cwd=Path(__file__).resolve().parents[2],
            start_new_session=True,
        )
        try:
            self.env = self._wait_for_env_file()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_for_env_file(self) -> dict[str, str]:
        assert self._proc is not None
        deadline = time.monotonic() + self.start_timeout_s
        while True:
            if self.env_file.is_file():
                values = read_env_file(self.env_file)
                if values.get(PID_KEY) == str(self._proc.pid):
                    return values
            code = self._proc.poll()
            if code is not None:
                raise EmulatorError(
                    f"the emulator exited with code {code} before it was ready; "
                    f"stderr:\n{self._stderr_tail()}"
                )
            if time.monotonic() > deadline:
                raise EmulatorError(
                    f"the emulator was not ready after {self.start_timeout_s:.0f} s; "
                    f"stderr:\n{self._stderr_tail()}"
                )
            time.sleep(0.05)

    def wait(self, timeout_s: float) -> int:
        """Wait for the emulator to exit by itself; its exit code (raises on timeout)."""
        if self._proc is None:
            raise EmulatorError("the emulator is not running")
        try:
            return self._proc.wait(timeout_s)
        except subprocess.TimeoutExpired as exc:
            raise EmulatorError(f"the emulator did not exit within {timeout_s:.0f} s") from exc

    def stop(self, timeout_s: float = 15.0) -> int | None:
        """SIGTERM, wait up to `timeout_s`, then SIGKILL the whole process group."""
        proc, self._proc = self._proc, None
        code = None
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                code = proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                code = None
            # Anything the emulator left in its group (Postgres after a SIGKILL) goes too.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            if code is None:
                code = proc.wait(5)
        for handle in (self._stdout, self._stderr):
            if handle is not None:
                handle.close()
        self._stdout = self._stderr = None
        return code

    def _stderr_tail(self, lines: int = 30) -> str:
        try:
            text = self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> EmulatorProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
