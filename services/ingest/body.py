"""Reading a request's body: bounded in size and in time, JSON however it is labelled."""

from __future__ import annotations

import asyncio
import zlib
from typing import Any

import orjson
from fastapi import Request

from services.ingest.refusals import CLOSE, refuse

# What browsers send: fetch with JSON, and text/plain from sendBeacon and from analytics.js
# (a "simple" content type, so that a request without other headers needs no preflight).
MEDIA_TYPES = ("application/json", "text/plain", "")


async def read_json(request: Request, limit: int, timeout_s: float) -> Any:
    """The body as JSON: ``application/json`` or ``text/plain``, received within ``timeout_s``."""
    media = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if media not in MEDIA_TYPES:
        refuse(415, "content-type", f"{media} is not accepted; send application/json or text/plain")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        refuse(413, "body", f"larger than {limit} bytes", CLOSE)
    try:
        async with asyncio.timeout(timeout_s):
            body = await _receive(request, limit)
    except TimeoutError:
        refuse(408, "body", f"not received within {timeout_s:g} s", CLOSE)
    if request.headers.get("content-encoding", "").lower() == "gzip":
        body = _gunzip(body, limit)
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        if "depth limit" in str(exc):
            refuse(400, "body", "nests deeper than 1024 levels")
        refuse(400, "body", f"malformed JSON ({exc})")


async def _receive(request: Request, limit: int) -> bytes:
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            refuse(413, "body", f"larger than {limit} bytes", CLOSE)
        chunks.append(chunk)
    return b"".join(chunks)


def _gunzip(body: bytes, limit: int) -> bytes:
    """Decompress a gzip body, refusing one that inflates past the body limit."""
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        plain = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        refuse(400, "body", f"not valid gzip ({exc})")
    if len(plain) > limit:
        refuse(413, "body", f"larger than {limit} bytes once decompressed")
    return plain
