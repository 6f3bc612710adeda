"""Amazon Bedrock through the Converse API: OpenAI chat in, ``/converse`` and ``/converse-stream`` out.

Requests are signed with SigV4 (``llmroute_sidecar.aws.sigv4``, service ``bedrock``) for the backend's
region; streams are AWS event-stream frames (``llmroute_sidecar.aws.eventstream``) decoded by
:class:`BedrockStreamDecoder` in ``bedrock_stream.py``. Neighbours: ``base.py`` (the contract),
``openai_fields.py`` (reading the OpenAI request), ``common.py`` (OpenAI-shaped results).

Translation, and what is approximated:

- ``system``/``developer`` messages become the top-level ``system`` blocks, wherever they stood;
- content parts: text; images only as ``data:`` URIs (bytes) or ``s3://`` locations, since Converse
  cannot fetch http URLs (BAD_REQUEST saying so); ``file`` parts with inline data become ``document``
  blocks; audio is refused;
- assistant ``tool_calls`` become ``toolUse`` blocks, ``tool`` messages user ``toolResult`` blocks, and
  consecutive messages of one role are merged, because Converse insists on alternating roles;
- ``tool_choice``: auto → ``auto``, required → ``any``, a named function → ``tool``. Converse has no
  "none": the tools are left out, unless the history already holds tool blocks (Converse then requires
  ``toolConfig``), in which case they are sent without a choice and the model may still call one;
- JSON mode (``response_format``) has no Converse switch: it is emulated with a system instruction
  (``openai_fields.json_instruction``), so the model is asked, not constrained;
- ``seed``, penalties, ``logprobs`` and ``parallel_tool_calls`` have no Converse equivalent and are
  dropped;
- embeddings are not part of Converse: Titan (``amazon.titan-embed-*``, one input per call) and Cohere
  (``cohere.embed-*``) embedding models are called through InvokeModel; other models are refused.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import orjson

from ..aws.sigv4 import sign
from ..ids import new_id
from .base import Target, UpstreamRequest
from .bedrock_stream import BedrockStreamDecoder, bedrock_usage, error_kind, stop_reason
from .common import completion, encode, loads, retry_after
from .errors import ErrorKind, ProviderError, kind_for_status
from .openai_fields import (
    content_text,
    json_instruction,
    max_output_tokens,
    parse_data_uri,
    stop_list,
    tool_arguments,
    unsupported,
)

__all__ = ["BedrockAdapter", "BedrockStreamDecoder", "converse_body"]

Json = dict[str, Any]
NAME = "bedrock"
DEFAULT_REGION = "us-east-1"
_SERVICE = "bedrock"
_IMAGE_FORMATS = {
    "image/png": "png",
    "image/jpeg": "jpeg",
    "image/jpg": "jpeg",
    "image/gif": "gif",
    "image/webp": "webp",
}
_DOCUMENT_FORMATS = {
    "application/pdf": "pdf",
    "text/csv": "csv",
    "application/msword": "doc",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
    "application/vnd.ms-excel": "xls",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": "xlsx",
    "text/html": "html",
    "text/plain": "txt",
    "text/markdown": "md",
}
_DOCUMENT_NAME = re.compile(r"[^A-Za-z0-9\-()\[\] ]+")


# --- OpenAI request -> Converse body ---------------------------------------------------------------


def converse_body(body: Json) -> Json:
    """The Converse request body (the model id goes in the URL) for an OpenAI chat request."""
    system: list[Json] = []
    messages: list[Json] = []
    for message in body.get("messages") or []:
        role = message.get("role")
        if role in ("system", "developer"):
            text = content_text(message.get("content"))
            if text:
                system.append({"text": text})
        elif role == "user":
            _append(messages, "user", _user_blocks(message.get("content")))
        elif role == "assistant":
            _append(messages, "assistant", _assistant_blocks(message))
        elif role == "tool":
            text = content_text(message.get("content"))
            result = {"toolUseId": message.get("tool_call_id"), "content": [{"text": text}] if text else []}
            _append(messages, "user", [{"toolResult": result}])
        else:
            raise unsupported(NAME, f"{role!r} messages (legacy function calling); use tools")
    instruction = json_instruction(body.get("response_format"))
    if instruction:
        system.append({"text": instruction})

    out: Json = {"messages": messages}
    if system:
        out["system"] = system
    inference: Json = {}
    limit = max_output_tokens(body)
    if limit is not None:
        inference["maxTokens"] = limit
    if body.get("temperature") is not None:
        inference["temperature"] = body["temperature"]
    if body.get("top_p") is not None:
        inference["topP"] = body["top_p"]
    stops = stop_list(body)
    if stops:
        inference["stopSequences"] = stops
    if inference:
        out["inferenceConfig"] = inference
    tool_config = _tool_config(body, messages)
    if tool_config:
        out["toolConfig"] = tool_config
    return out


def _append(messages: list[Json], role: str, blocks: list[Json]) -> None:
    """Add blocks as a message of ``role``, merged into the previous one when it has the same role."""
    if not blocks:
        return
    if messages and messages[-1]["role"] == role:
        messages[-1]["content"].extend(blocks)
    else:
        messages.append({"role": role, "content": blocks})


def _user_blocks(content: Any) -> list[Json]:
    if isinstance(content, str):
        return [{"text": content}] if content else []
    blocks: list[Json] = []
    for part in content if isinstance(content, list) else []:
        kind = part.get("type")
        if kind in ("text", "refusal"):
            text = part.get(kind)
            if isinstance(text, str) and text:
                blocks.append({"text": text})
        elif kind == "image_url":
            blocks.append(_image_block(str((part.get("image_url") or {}).get("url", ""))))
        elif kind == "file":
            blocks.append(_document_block(part.get("file") or {}, len(blocks)))
        else:
            raise unsupported(NAME, f"{kind} content parts")
    return blocks


def _image_block(url: str) -> Json:
    data_uri = parse_data_uri(url)
    if data_uri is not None:
        image_format = _IMAGE_FORMATS.get(data_uri.media_type)
        if image_format is None:
            raise unsupported(NAME, f"images of type {data_uri.media_type} (use png, jpeg, gif or webp)")
        return {"image": {"format": image_format, "source": {"bytes": data_uri.data}}}
    if url.startswith("s3://"):
        extension = url.rpartition(".")[2].lower()
        image_format = {"jpg": "jpeg"}.get(extension, extension)
        if image_format not in _IMAGE_FORMATS.values():
            raise unsupported(NAME, f"the image {url!r}: its name must end in .png, .jpeg, .gif or .webp")
        return {"image": {"format": image_format, "source": {"s3Location": {"uri": url}}}}
    raise unsupported(
        NAME,
        "image URLs: Converse takes image bytes or s3:// locations, not http URLs; "
        "send the image inline as a data: URI",
    )


def _document_block(file: Mapping[str, Any], index: int) -> Json:
    data_uri = parse_data_uri(str(file.get("file_data") or ""))
    if data_uri is None:
        raise unsupported(NAME, "file parts without inline file_data (a data: URI)")
    document_format = _DOCUMENT_FORMATS.get(data_uri.media_type)
    if document_format is None:
        raise unsupported(NAME, f"documents of type {data_uri.media_type}")
    stem = str(file.get("filename") or "").rpartition(".")[0] or str(file.get("filename") or "")
    name = " ".join(_DOCUMENT_NAME.sub(" ", stem).split()) or f"document {index + 1}"
    return {"document": {"format": document_format, "name": name, "source": {"bytes": data_uri.data}}}


def _assistant_blocks(message: Mapping[str, Any]) -> list[Json]:
    if message.get("function_call"):
        raise unsupported(NAME, "assistant function_call (legacy function calling); use tool_calls")
    blocks: list[Json] = []
    text = content_text(message.get("content"))
    if text:
        blocks.append({"text": text})
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        blocks.append(
            {
                "toolUse": {
                    "toolUseId": call.get("id"),
                    "name": function.get("name"),
                    "input": tool_arguments(function.get("arguments"), NAME),
                }
            }
        )
    return blocks


def _tool_config(body: Json, messages: list[Json]) -> Json | None:
    tools = [
        {
            "toolSpec": {
                "name": function["name"],
                **({"description": function["description"]} if function.get("description") else {}),
                "inputSchema": {"json": function.get("parameters") or {"type": "object", "properties": {}}},
            }
        }
        for tool in body.get("tools") or []
        if isinstance(function := tool.get("function"), dict)
    ]
    if not tools:
        return None
    choice = body.get("tool_choice")
    if choice == "none":
        has_tool_blocks = any(
            "toolUse" in block or "toolResult" in block for m in messages for block in m["content"]
        )
        return {"tools": tools} if has_tool_blocks else None
    config: Json = {"tools": tools}
    if choice == "auto":
        config["toolChoice"] = {"auto": {}}
    elif choice == "required":
        config["toolChoice"] = {"any": {}}
    elif isinstance(choice, dict):
        config["toolChoice"] = {"tool": {"name": (choice.get("function") or {}).get("name")}}
    return config


# --- Converse answer -> OpenAI ---------------------------------------------------------------------


def _message(content: Any) -> tuple[Json, bool]:
    texts: list[str] = []
    calls: list[Json] = []
    for block in content if isinstance(content, list) else []:
        if not isinstance(block, dict):
            continue
        if isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif isinstance(tool_use := block.get("toolUse"), dict):
            calls.append(
                {
                    "id": tool_use.get("toolUseId") or f"call_{new_id()[:24]}",
                    "type": "function",
                    "function": {
                        "name": tool_use.get("name", ""),
                        "arguments": encode(
                            tool_use.get("input", {}), NAME, kind=ErrorKind.PROTOCOL
                        ).decode(),
                    },
                }
            )
        # reasoningContent, citations and the like have no place in a chat.completion message.
    message: Json = {"role": "assistant", "content": "".join(texts) if texts or not calls else None}
    message["refusal"] = None
    if calls:
        message["tool_calls"] = calls
    return message, bool(calls)


# --- embeddings through InvokeModel ----------------------------------------------------------------


def _embedding_inputs(body: Json) -> list[str]:
    value = body.get("input")
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise unsupported(NAME, "token-id embedding inputs; send text")


def _embeddings_body(model: str, body: Json) -> Json:
    texts = _embedding_inputs(body)
    if "titan-embed" in model:
        if len(texts) != 1:
            raise unsupported(NAME, f"{len(texts)} inputs in one call to {model} (Titan embeds one text)")
        out: Json = {"inputText": texts[0]}
        if body.get("dimensions"):
            out["dimensions"] = body["dimensions"]
        return out
    if "cohere.embed" in model:
        return {"texts": texts, "input_type": "search_document"}
    raise unsupported(
        NAME, f"embeddings with {model}: Converse has none; use an amazon.titan-embed or cohere.embed model"
    )


# --- the adapter -----------------------------------------------------------------------------------


class BedrockAdapter:
    """Bedrock Runtime: Converse for chat, InvokeModel for Titan/Cohere embeddings, SigV4 auth."""

    name = NAME

    def _request(self, target: Target, operation: str, payload: Json, *, accept: str) -> UpstreamRequest:
        region = target.region or DEFAULT_REGION
        base = (target.endpoint or f"https://bedrock-runtime.{region}.amazonaws.com").rstrip("/")
        # The model id may be an ARN or an inference profile: encode everything but RFC 3986's
        # unreserved characters, as the AWS SDKs do (":" -> %3A, "/" -> %2F).
        url = f"{base}/model/{quote(target.model, safe='-_.~')}/{operation}"
        data = encode(payload, NAME)
        headers = {"content-type": "application/json", "accept": accept}
        if target.aws is not None:
            signed = sign(
                method="POST",
                url=url,
                headers=headers,
                body=data,
                access_key_id=target.aws.access_key_id,
                secret_access_key=target.aws.secret_access_key,
                session_token=target.aws.session_token,
                region=region,
                service=_SERVICE,
            )
            return UpstreamRequest("POST", url, signed, data)
        if target.api_key:  # a Bedrock API key (bearer token) instead of IAM credentials
            return UpstreamRequest(
                "POST", url, {**headers, "authorization": f"Bearer {target.api_key}"}, data
            )
        raise ProviderError(ErrorKind.AUTH, "no AWS credentials for this Bedrock backend", provider=NAME)

    def chat_request(self, target: Target, body: Json, *, stream: bool) -> UpstreamRequest:
        if stream:
            return self._request(
                target, "converse-stream", converse_body(body), accept="application/vnd.amazon.eventstream"
            )
        return self._request(target, "converse", converse_body(body), accept="application/json")

    def parse_chat(self, body: bytes, *, model: str) -> Json:
        parsed = loads(body, NAME)
        output = parsed.get("output") if isinstance(parsed, dict) else None
        if not isinstance(output, dict) or not isinstance(output.get("message"), dict):
            raise ProviderError(ErrorKind.PROTOCOL, "Converse answer has no output.message", provider=NAME)
        message, has_calls = _message(output["message"].get("content"))
        return completion(
            id=f"chatcmpl-{new_id()}",
            model=model,
            message=message,
            finish_reason=stop_reason(parsed.get("stopReason"), has_calls),
            usage_=bedrock_usage(parsed.get("usage")),
        )

    def chat_stream_decoder(self, *, model: str, include_usage: bool) -> BedrockStreamDecoder:
        return BedrockStreamDecoder(model=model, include_usage=include_usage)

    def embeddings_request(self, target: Target, body: Json) -> UpstreamRequest:
        return self._request(
            target, "invoke", _embeddings_body(target.model, body), accept="application/json"
        )

    def parse_embeddings(self, body: bytes, *, model: str) -> Json:
        parsed = loads(body, NAME)
        if not isinstance(parsed, dict):
            raise ProviderError(ErrorKind.PROTOCOL, "embeddings answer is not an object", provider=NAME)
        vectors: Any
        if isinstance(parsed.get("embedding"), list):  # Titan
            vectors = [parsed["embedding"]]
        else:  # Cohere: a list of vectors, or {"float": [...]} when embedding types were asked for
            vectors = parsed.get("embeddings")
            if isinstance(vectors, dict):
                vectors = vectors.get("float")
        if not isinstance(vectors, list):
            raise ProviderError(ErrorKind.PROTOCOL, "embeddings answer has no vectors", provider=NAME)
        tokens = int(parsed.get("inputTextTokenCount") or 0)
        return {
            "object": "list",
            "data": [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)],
            "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }

    def error(self, status: int, headers: Mapping[str, str], body: bytes) -> ProviderError:
        lowered = {name.lower(): value for name, value in headers.items()}
        error_type = lowered.get("x-amzn-errortype", "")
        message = ""
        try:
            parsed = orjson.loads(body)
        except orjson.JSONDecodeError:
            parsed = None
        if isinstance(parsed, dict):
            message = str(parsed.get("message") or parsed.get("Message") or "")
            error_type = error_type or str(parsed.get("__type") or "")
        elif body:
            message = body[:200].decode("utf-8", errors="replace")
        # "ThrottlingException:http://internal.amazon.com/..." or "com.amazon.coral...#ThrottlingException"
        error_type = error_type.partition(":")[0].rpartition("#")[2]
        message = message or error_type or f"HTTP {status}"
        kind = error_kind(error_type, message) or kind_for_status(status, message)
        text = f"{error_type}: {message}" if error_type and error_type not in message else message
        return ProviderError(kind, text, status=status, retry_after=retry_after(headers), provider=NAME)
