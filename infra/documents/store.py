"""Write-once document storage on S3 (or any S3-compatible store) with aioboto3.

Keys are derived from document inputs (``models.documents``), so "already stored" means
"already issued": ``put_if_absent`` never overwrites, and a replay gets back the first
document's sha256 instead of issuing a second, different one.
"""

from __future__ import annotations

import base64
import hashlib
import os
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import aioboto3
from botocore.config import Config
from botocore.exceptions import ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from infra.logging import get_logger
from infra.settings import Settings

log = get_logger(__name__)

# S3 caps presigned URLs (SigV4) at 7 days.
MAX_PRESIGN_SECONDS = 7 * 24 * 3600

_NOT_FOUND = frozenset({"404", "NoSuchKey", "NotFound", "NoSuchBucket"})
# 412: the conditional write lost (the key exists). 409: a concurrent conditional write to
# the same key is in flight on AWS; either way someone else is storing this document.
_ALREADY_WRITTEN = frozenset({"PreconditionFailed", "412", "ConditionalRequestConflict", "409"})


class DocumentNotFound(LookupError):
    """No object under the key."""


@dataclass(frozen=True, slots=True)
class StoredDocument:
    key: str
    sha256: str  # hex digest of the stored bytes
    size_bytes: int
    created: bool  # False: the key already held a document, which was kept


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


def is_storage_outage(exc: BaseException) -> bool:
    """Whether ``exc`` says S3 is away (endpoint unreachable, connection dropped or timed out,
    or a 5xx from its side), not that the request was wrong: agents wait it out holding the
    partition, as for a broker outage, instead of dead-lettering the document after their
    few quick retries (an outage past ~90 s used to park every term sheet asked meanwhile)."""
    if isinstance(exc, (BotoConnectionError, HTTPClientError)):
        return True
    return isinstance(exc, ClientError) and _status(exc) >= 500


def _is_not_found(exc: ClientError) -> bool:
    return _error_code(exc) in _NOT_FOUND or _status(exc) == 404


class DocumentStore:
    """One S3 client for the lifetime of an ``async with`` block."""

    def __init__(
        self,
        *,
        bucket: str,
        endpoint_url: str | None = None,
        region_name: str | None = None,
        aws_access_key_id: str | None = None,
        aws_secret_access_key: str | None = None,
        aws_session_token: str | None = None,
    ) -> None:
        self.bucket = bucket
        self._region = region_name
        self._client_kwargs: dict[str, Any] = {
            "endpoint_url": endpoint_url,
            "region_name": region_name,
            "aws_access_key_id": aws_access_key_id,
            "aws_secret_access_key": aws_secret_access_key,
            "aws_session_token": aws_session_token,
            "config": Config(
                signature_version="s3v4",
                # Path-style for S3-compatible endpoints (moto, MinIO: no wildcard DNS);
                # AWS itself gets botocore's default.
                s3={"addressing_style": "path" if endpoint_url else "auto"},
                retries={"max_attempts": 5, "mode": "standard"},
                connect_timeout=5,
                read_timeout=30,
            ),
        }
        self._session = aioboto3.Session()
        self._client_cm: Any = None
        self._client: Any = None

    @classmethod
    def from_settings(cls, settings: Settings, environ: Mapping[str, str] | None = None) -> DocumentStore:
        """Bucket and endpoint from settings; credentials and region from the standard AWS
        variables. Anything unset stays None, so botocore's own chain (profile, IRSA,
        instance role) still applies in production."""
        env = os.environ if environ is None else environ
        return cls(
            bucket=settings.s3_bucket,
            endpoint_url=settings.s3_endpoint_url,
            region_name=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None,
            aws_access_key_id=env.get("AWS_ACCESS_KEY_ID") or None,
            aws_secret_access_key=env.get("AWS_SECRET_ACCESS_KEY") or None,
            aws_session_token=env.get("AWS_SESSION_TOKEN") or None,
        )

    async def __aenter__(self) -> Self:
        self._client_cm = self._session.client("s3", **self._client_kwargs)
        self._client = await self._client_cm.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        client_cm, self._client_cm, self._client = self._client_cm, None, None
        if client_cm is not None:
            await client_cm.__aexit__(exc_type, exc, tb)

    @property
    def client(self) -> Any:
        if self._client is None:
            raise RuntimeError("DocumentStore is used outside its `async with` block")
        return self._client

    async def ensure_bucket(self) -> None:
        """Create the bucket unless it exists; safe to call from every process at start."""
        try:
            await self.client.head_bucket(Bucket=self.bucket)
            return
        except ClientError as exc:
            # 403 means it exists but is not ours (or we lack rights): creating would fail
            # anyway, and the error says more than a BucketAlreadyExists would.
            if not _is_not_found(exc):
                raise
        params: dict[str, Any] = {"Bucket": self.bucket}
        if self._region and self._region != "us-east-1":
            # us-east-1 is the one region that rejects an explicit LocationConstraint.
            params["CreateBucketConfiguration"] = {"LocationConstraint": self._region}
        try:
            await self.client.create_bucket(**params)
            log.info("document_bucket_created", bucket=self.bucket)
        except ClientError as exc:
            if _error_code(exc) != "BucketAlreadyOwnedByYou":  # another process won the race
                raise

    async def stat(self, key: str) -> StoredDocument | None:
        """What is stored under the key (``created=False``), or None when nothing is."""
        try:
            head = await self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if _is_not_found(exc):
                return None
            raise
        sha256 = head.get("Metadata", {}).get("sha256")
        if not sha256:
            # Written by something other than this store: hash the bytes themselves.
            sha256 = hashlib.sha256(await self.get(key)).hexdigest()
        return StoredDocument(key=key, sha256=sha256, size_bytes=int(head["ContentLength"]), created=False)

    async def exists(self, key: str) -> bool:
        try:
            await self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if _is_not_found(exc):
                return False
            raise
        return True

    async def put_if_absent(self, key: str, body: bytes, content_type: str = "application/pdf") -> StoredDocument:
        """Store ``body`` under ``key`` unless the key already holds a document.

        The write is conditional (``If-None-Match: *``), so of two racing writers exactly
        one creates the object and the other gets the winner's sha256 back. The cheap
        ``stat`` first skips the upload entirely on the common replay path.
        """
        existing = await self.stat(key)
        if existing is not None:
            log.info("document_exists", key=key, sha256=existing.sha256)
            return existing
        return await self.put_new(key, body, content_type)

    async def put_new(self, key: str, body: bytes, content_type: str = "application/pdf") -> StoredDocument:
        """The conditional write of ``put_if_absent`` without its look-up first, for a caller
        that has just seen the key absent (``produce_*``: one S3 request fewer per new
        document). Still write-once: a key written meanwhile refuses the upload and the
        winner's document is returned."""
        digest = hashlib.sha256(body)
        try:
            await self.client.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=body,
                ContentType=content_type,
                ContentDisposition=f'inline; filename="{posixpath.basename(key)}"',
                Metadata={"sha256": digest.hexdigest()},
                # S3 rejects the upload if the bytes it received do not match (moto does not check).
                ChecksumSHA256=base64.b64encode(digest.digest()).decode("ascii"),
                IfNoneMatch="*",
            )
        except ClientError as exc:
            if _error_code(exc) not in _ALREADY_WRITTEN:
                raise
            existing = await self.stat(key)
            if existing is None:  # a conflicting writer that then failed: let the caller retry
                raise
            log.info("document_exists", key=key, sha256=existing.sha256, raced=True)
            return existing
        log.info("document_stored", key=key, sha256=digest.hexdigest(), size_bytes=len(body))
        return StoredDocument(key=key, sha256=digest.hexdigest(), size_bytes=len(body), created=True)

    async def get(self, key: str) -> bytes:
        try:
            response = await self.client.get_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if _is_not_found(exc):
                raise DocumentNotFound(key) from exc
            raise
        async with response["Body"] as stream:
            data: bytes = await stream.read()
        return data

    async def presigned_url(self, key: str, expires_seconds: int = 300) -> str:
        """A time-limited GET link, e.g. for the admin UI; the bucket itself stays private."""
        if not 1 <= expires_seconds <= MAX_PRESIGN_SECONDS:
            raise ValueError(f"expires_seconds must be between 1 and {MAX_PRESIGN_SECONDS}")
        url: str = await self.client.generate_presigned_url(
            "get_object",
            Params={"Bucket": self.bucket, "Key": key},
            ExpiresIn=expires_seconds,
        )
        return url
