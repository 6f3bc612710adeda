"""HTTP calls to the provider batch APIs: submit, find, look at, fetch the results of, and cancel.

OpenAI: ``POST {base}/files`` (multipart, purpose ``batch``), ``POST {base}/batches`` with our
submission id in ``metadata.llmroute_submission``, ``GET {base}/batches/{id}``,
``GET {base}/files/{id}/content``, ``GET {base}/batches?after=`` to find a batch by that id.
Azure OpenAI: the same under ``{endpoint}/openai`` with ``api-version``, ``api-key`` auth.
Anthropic: ``POST /v1/messages/batches``, ``GET .../{id}``, ``GET .../{id}/results`` (built from the
configured endpoint, never from the ``results_url`` the provider sends, so the key goes nowhere
else), ``GET /v1/messages/batches?after_id=`` to find a batch, ``POST .../{id}/cancel``.

Requests go through the sidecar's provider-facing client (``upstream.py``), so failures arrive as
classified :class:`ProviderError` of the provider's adapter, and keys travel only in headers (a
:class:`Target` never prints its key). Neighbours: ``provider_wire.py`` (the bodies),
``provider_poller.py`` (when to call what).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Collection

import orjson

from ..adapters.anthropic import API_VERSION
from ..adapters.anthropic import DEFAULT_ENDPOINT as ANTHROPIC_ENDPOINT
from ..adapters.base import Target, UpstreamRequest
from ..adapters.errors import ErrorKind, ProviderError
from ..adapters.openai import DEFAULT_OPENAI
from ..adapters.registry import adapter_for
from ..upstream import UpstreamClient
from .provider_wire import RemoteBatch, anthropic_batch, openai_batch

__all__ = ["ProviderBatchClient"]

_CALL_TIMEOUT_S = 60.0
_TRANSFER_TIMEOUT_S = 600.0  # uploads and result downloads of up to a few hundred MB
_FIND_PAGES = 20  # pages of 100 batches looked through for a lost submission
_FIND_SLACK_S = 120.0  # clock skew between us and the provider


class ProviderBatchClient:
    """One client for every provider batch API; stateless apart from the HTTP client it uses."""

    def __init__(self, upstream: UpstreamClient) -> None:
        self.upstream = upstream

    # -- plumbing ------------------------------------------------------------------------------

    async def _call(
        self, target: Target, method: str, url: str, body: bytes = b"", *, content_type: str = "application/json",
        within: float = _CALL_TIMEOUT_S,
    ) -> bytes:  # fmt: skip
        headers = {"accept": "application/json", **_auth(target)}
        if body:
            headers["content-type"] = content_type
        adapter = adapter_for(target.provider)
        try:
            async with asyncio.timeout(within):
                response = await self.upstream.open(UpstreamRequest(method, url, headers, body), adapter)
                try:
                    return await response.read()
                finally:
                    response.close()
        except TimeoutError:
            raise ProviderError(
                ErrorKind.TIMEOUT,
                f"the batch API did not answer in {within:.0f} s",
                provider=target.provider,
            ) from None

    async def _json(self, target: Target, method: str, url: str, payload: object = None) -> object:
        body = orjson.dumps(payload) if payload is not None else b""
        raw = await self._call(target, method, url, body)
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise ProviderError(
                ErrorKind.PROTOCOL,
                "the batch API answered something that is not JSON",
                provider=target.provider,
            ) from None

    # -- the calls -----------------------------------------------------------------------------

    async def submit(self, target: Target, lines: list[bytes], marker: str) -> RemoteBatch:
        """A new provider batch of ``lines`` (from ``provider_wire.request_line``)."""
        if target.provider == "anthropic":
            requests = [orjson.loads(line) for line in lines]
            return anthropic_batch(
                await self._json(target, "POST", _anthropic(target), {"requests": requests})
            )
        boundary = "llmroute-" + secrets.token_hex(12)
        upload = await self._call(
            target,
            "POST",
            _openai(target, "/files"),
            _multipart(boundary, b"\n".join(lines) + b"\n", f"{marker}.jsonl"),
            content_type=f"multipart/form-data; boundary={boundary}",
            within=_TRANSFER_TIMEOUT_S,
        )
        file_id = orjson.loads(upload).get("id") if upload.startswith(b"{") else None
        if not isinstance(file_id, str):
            raise ProviderError(
                ErrorKind.PROTOCOL, "the file upload answered no file id", provider=target.provider
            )
        payload = {
            "input_file_id": file_id,
            "endpoint": "/chat/completions" if target.provider == "azure-openai" else "/v1/chat/completions",
            "completion_window": "24h",
            "metadata": {"llmroute_submission": marker},
        }
        return openai_batch(await self._json(target, "POST", _openai(target, "/batches"), payload))

    async def get(self, target: Target, batch_id: str) -> RemoteBatch:
        if target.provider == "anthropic":
            return anthropic_batch(await self._json(target, "GET", _anthropic(target, f"/{batch_id}")))
        return openai_batch(await self._json(target, "GET", _openai(target, f"/batches/{batch_id}")))

    async def cancel(self, target: Target, batch_id: str) -> None:
        if target.provider == "anthropic":
            await self._call(target, "POST", _anthropic(target, f"/{batch_id}/cancel"))
        else:
            await self._call(target, "POST", _openai(target, f"/batches/{batch_id}/cancel"))

    async def results(self, target: Target, remote: RemoteBatch) -> tuple[bytes, bytes]:
        """(output, errors) of an OpenAI batch, or (results, b"") of an Anthropic one."""
        if target.provider == "anthropic":
            url = _anthropic(target, f"/{remote.id}/results")
            return await self._call(target, "GET", url, within=_TRANSFER_TIMEOUT_S), b""
        files: list[bytes] = []
        for file_id in (remote.output_file, remote.error_file):
            url = _openai(target, f"/files/{file_id}/content")
            files.append(await self._call(target, "GET", url, within=_TRANSFER_TIMEOUT_S) if file_id else b"")
        return files[0], files[1]

    async def find(
        self, target: Target, marker: str, *, count: int, since: float, exclude: Collection[str]
    ) -> RemoteBatch | None:
        """The batch a submission created, when the answer to the create was lost (a crash, a
        timeout): OpenAI and Azure by our id in its metadata; Anthropic, which keeps none, by the
        number of requests among batches created since ``since`` that no other submission owns."""
        after = ""
        for _ in range(_FIND_PAGES):
            if target.provider == "anthropic":
                query = f"?limit=100&after_id={after}" if after else "?limit=100"
                page = await self._json(target, "GET", _anthropic(target) + query)
                parse = anthropic_batch
            else:
                query = f"limit=100&after={after}" if after else "limit=100"
                page = await self._json(target, "GET", _openai(target, "/batches", query))
                parse = openai_batch
            data = page.get("data") if isinstance(page, dict) else None
            if not isinstance(data, list) or not data:
                return None
            batches = [parse(item) for item in data]
            for remote in batches:
                if remote.created_at and remote.created_at < since - _FIND_SLACK_S:
                    return None  # newest first: everything further is older than the submission
                if target.provider != "anthropic" and remote.marker == marker:
                    return remote
                if target.provider == "anthropic" and remote.total == count and remote.id not in exclude:
                    return remote
            if not (isinstance(page, dict) and page.get("has_more")):
                return None
            after = batches[-1].id
        return None


def _auth(target: Target) -> dict[str, str]:
    if not target.api_key:
        return {}
    if target.provider == "anthropic":
        return {"x-api-key": target.api_key, "anthropic-version": API_VERSION}
    if target.provider == "azure-openai":
        return {"api-key": target.api_key}
    return {"authorization": f"Bearer {target.api_key}"}


def _openai(target: Target, path: str, query: str = "") -> str:
    if target.provider == "azure-openai":
        params = f"api-version={target.azure_api_version}" + (f"&{query}" if query else "")
        return f"{target.endpoint.rstrip('/')}/openai{path}?{params}"
    base = (target.endpoint or DEFAULT_OPENAI).rstrip("/")
    return f"{base}{path}" + (f"?{query}" if query else "")


def _anthropic(target: Target, path: str = "") -> str:
    base = (target.endpoint or ANTHROPIC_ENDPOINT).rstrip("/")
    root = base if base.endswith("/v1") else f"{base}/v1"
    return f"{root}/messages/batches{path}"


def _multipart(boundary: str, content: bytes, filename: str) -> bytes:
    """multipart/form-data with ``purpose=batch`` and the JSONL ``file``, as the SDKs send it."""
    dash = f"--{boundary}\r\n".encode()
    return b"".join(
        [
            dash,
            b'Content-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n',
            dash,
            f'Content-Disposition: form-data; name="file"; filename="{filename}"\r\n'.encode(),
            b"Content-Type: application/jsonl\r\n\r\n",
            content,
            f"\r\n--{boundary}--\r\n".encode(),
        ]
    )
