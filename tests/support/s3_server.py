"""A real S3-compatible server on a free localhost port, for tests: moto's server mode.

The server runs in a child process (``python tests/support/s3_server.py``), so the clients under
test (s3fs in this process, in `tte-scale` subprocesses, in Ray workers and DataLoader workers)
talk HTTP to it exactly as they would to a bucket, through the standard configuration:
``AWS_ENDPOINT_URL`` and the credential variables (:meth:`S3Server.env`). Nothing of the client
is mocked. The child binds port 0 itself and prints the port it got, so two test sessions never
race for one port.

Example::

    with S3Server() as s3, s3.environ():     # stopped on exit, also after a failure
        s3.make_bucket("cohort")
        fsspec.filesystem("s3").pipe_file("cohort/a.bin", b"...")
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

STARTUP_TIMEOUT_S = 60.0
# Credentials are placeholders (moto accepts any); the files point nowhere so that a developer's
# own ~/.aws configuration never leaks into a test, and the EC2 metadata lookup is off (botocore
# would otherwise spend seconds probing 169.254.169.254 when credentials are missing).
BASE_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_EC2_METADATA_DISABLED": "true",
}
CREDENTIAL_VARS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE")


class S3Server:
    """moto's S3 server in a child process; ``endpoint`` once started."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self.endpoint: str | None = None

    def start(self) -> S3Server:
        self._log = tempfile.TemporaryFile(mode="w+")  # the server's own messages, shown if it fails to start
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve())],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
        )
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        line = ""
        while time.monotonic() < deadline and self.proc.poll() is None:
            line = self.proc.stdout.readline().strip()
            if line.startswith("PORT "):
                self.endpoint = f"http://127.0.0.1:{int(line.split()[1])}"
                return self
        self._log.seek(0)
        err = self._log.read()[-2000:]
        self.stop()
        raise RuntimeError(f"moto S3 server did not start (last line {line!r}); its stderr: {err}")

    def stop(self) -> None:
        """Stop the child: closing its stdin asks it to stop, then SIGTERM, then SIGKILL (bounded)."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        with contextlib.suppress(OSError):
            proc.stdin.close()
        for sig in (None, proc.terminate, proc.kill):
            if sig is not None:
                sig()
            try:
                proc.wait(timeout=5)
                break
            except subprocess.TimeoutExpired:
                continue
        proc.stdout.close()
        self._log.close()

    def __enter__(self) -> S3Server:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def env(self, credentials: bool = True) -> dict[str, str]:
        """``os.environ`` for a client of this server (a subprocess, say); without credentials when
        asked (the variables removed, no file to fall back on)."""
        env = {**os.environ, **BASE_ENV, "AWS_ENDPOINT_URL": self.endpoint}
        if not credentials:
            for var in CREDENTIAL_VARS:
                env.pop(var, None)
        return env

    @contextlib.contextmanager
    def environ(self, credentials: bool = True):
        """This process as a client of the server for the duration (fsspec's cached S3 instances
        are dropped on entry and exit, since they keep the endpoint and credentials they saw)."""
        saved = dict(os.environ)
        _clear_s3fs()
        os.environ.clear()
        os.environ.update(self.env(credentials))
        try:
            yield self
        finally:
            os.environ.clear()
            os.environ.update(saved)
            _clear_s3fs()

    def make_bucket(self, name: str) -> str:
        import fsspec

        fsspec.filesystem("s3").mkdir(name)
        return f"s3://{name}"


def _clear_s3fs() -> None:
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()


def _serve() -> None:
    """Child process: serve until stdin closes or a signal ends it."""
    import signal

    from moto.server import ThreadedMotoServer

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    print(f"PORT {server.get_host_and_port()[1]}", flush=True)
    try:
        sys.stdin.read()  # returns when the parent closes stdin or dies
    finally:
        server.stop()


if __name__ == "__main__":
    _serve()
