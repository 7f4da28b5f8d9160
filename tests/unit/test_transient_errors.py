"""Which failures an agent waits out (holding the partition) and which it treats as a bad
event (a few retries, then the dead-letter topic). An S3 outage must be the former: a term
sheet asked for while S3 is away is produced when it is back, whatever the outage's length."""

from __future__ import annotations

import pytest
from aiokafka.errors import KafkaConnectionError
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)

from agents.consume import is_transient
from infra.avro import RegistryUnavailable


def _client_error(status: int, code: str) -> ClientError:
    return ClientError({"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "PutObject")


@pytest.mark.parametrize(
    "exc",
    [
        EndpointConnectionError(endpoint_url="http://127.0.0.1:1/bucket"),
        ConnectTimeoutError(endpoint_url="http://127.0.0.1:1/bucket"),
        ReadTimeoutError(endpoint_url="http://127.0.0.1:1/bucket"),
        ConnectionClosedError(endpoint_url="http://127.0.0.1:1/bucket"),
        _client_error(503, "SlowDown"),
        _client_error(500, "InternalError"),
        KafkaConnectionError(),
        RegistryUnavailable("down"),
    ],
    ids=lambda e: (
        type(e).__name__
        + (f"-{e.response['ResponseMetadata']['HTTPStatusCode']}" if isinstance(e, ClientError) else "")
    ),
)
def test_outages_are_waited_out(exc: BaseException) -> None:
    assert is_transient(exc)


@pytest.mark.parametrize(
    "exc",
    [_client_error(403, "AccessDenied"), _client_error(400, "InvalidRequest"), ValueError("bad"), KeyError("x")],
    ids=repr,
)
def test_request_errors_are_not(exc: BaseException) -> None:
    assert not is_transient(exc)
