"""Fixtures of the object storage tests: a real S3 server (moto's server mode) on localhost."""

from __future__ import annotations

import uuid

import pytest
from support.s3_server import S3Server


@pytest.fixture(scope="session")
def s3_server():
    """The server, for the whole session; stopped at the end, also after failures."""
    with S3Server() as server:
        yield server


@pytest.fixture
def s3(s3_server):
    """This process as a client of the server (endpoint and credentials in the environment)."""
    with s3_server.environ():
        yield s3_server


@pytest.fixture
def bucket(s3):
    """A fresh bucket per test: ``s3://<name>``."""
    return s3.make_bucket(f"t-{uuid.uuid4().hex[:12]}")
