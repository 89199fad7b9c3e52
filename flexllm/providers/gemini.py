"""The Google Gemini adapter: Developer API and Vertex AI (generateContent / streamGenerateContent).

Messages and tools are mapped to Gemini's shapes in `_gemini_request`; Vertex AI tokens come from
`vertex_auth`. This module builds the rest of the request and reads replies, stream chunks and errors.
"""
from __future__ import annotations

import json
import os
import re
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple
from urllib.parse import quote, urlsplit

from ..errors import APIStatusError, ContentBlockedError, QuotaExceededError, ResponseParseError, status_error_class
from ..types import ChatCompletionResult, StreamEvent
from ._gemini_request import to_contents, tool_choice, tools
from .base import LIBRARY_KWARGS, ProviderAdapter, RequestSpec, StreamReply, as_dict, as_str, check_headers, \
    check_token_limits, clean_secret, decode_sse_json
from .registry import Provider, register

__all__ = ["GeminiAdapter", "detect_gemini", "gemini_thinking_config"]

DEVELOPER_BASE = "https://generativelanguage.googleapis.com"
GOOGLE_HOSTS = ("generativelanguage.googleapis.com", "aiplatform.googleapis.com")
LEVELS = ("minimal", "low", "medium", "high")
FINISH = {"STOP": "stop", "MAX_TOKENS": "length"}
#: an empty reply ending so is the model failing at a tool call: a parse error, retried like one
BAD_CALL_FINISH = frozenset({"MALFORMED_FUNCTION_CALL", "UNEXPECTED_TOOL_CALL", "TOO_MANY_TOOL_CALLS"})
#: OpenAI-style kwarg → generationConfig field
PARAM_MAP = {"max_tokens": "maxOutputTokens", "max_completion_tokens": "maxOutputTokens", "n": "candidateCount",
             "temperature": "temperature", "top_p": "topP", "top_k": "topK", "seed": "seed",
             "presence_penalty": "presencePenalty", "frequency_penalty": "frequencyPenalty"}
#: Gemini's own generationConfig names, accepted as kwargs too
NATIVE = frozenset({"maxOutputTokens", "candidateCount", "topP", "topK", "stopSequences", "responseMimeType",
                    "responseSchema", "responseJsonSchema", "presencePenalty", "frequencyPenalty",
                    "responseLogprobs", "logprobs", "responseModalities", "mediaResolution", "thinkingConfig"})
PASS_THROUGH = frozenset({"generationConfig", "safetySettings", "safety_settings", "extra_body", "tools",
                          "tool_choice", "toolConfig", "cachedContent", "labels", "stream", "stream_options",
                          "stop", "response_format", "extra_headers"})
_LOCATION = re.compile(r"^[a-z0-9-]+$")
_DURATION = re.compile(r"^\s*([0-9.]+)\s*(ms|s)?\s*$")


def detect_gemini(base_url: Optional[str], model: Optional[str]) -> bool:
    """True for Google endpoints, or a `gemini-*` model given no base_url."""
    if base_url:
        return (urlsplit(base_url).hostname or "").endswith(GOOGLE_HOSTS)
    name = (model or "").lower()
    for prefix in ("models/", "google/"):
        if name.startswith(prefix):
            name = name[len(prefix):]
    return name.startswith("gemini")


def gemini_thinking_config(thinking: Any, model: str) -> Optional[Dict[str, Any]]:
    """thinkingConfig for a thinking value (DESIGN §8); None sends nothing.

    False turns thinking off where the model allows it: 2.5 Flash/Flash-Lite take budget 0; 2.5 Pro cannot
    turn it off, so it gets its minimum budget (128); Gemini 3 models take the lowest level ("low",
    or "minimal" on Flash models).
    """
    if thinking is None:
        return None
    if isinstance(thinking, str):
        if thinking not in LEVELS:
            raise ValueError(f"thinking must be True, False, None or one of {LEVELS}, got {thinking!r}")
        return {"thinkingLevel": thinking}
    if not isinstance(thinking, bool):
        raise ValueError(f"thinking must be True, False, None or one of {LEVELS}, got {thinking!r}")
    if thinking:
        return {"includeThoughts": True}
    name = model.lower()
    if "gemini-3" in name:
        return {"thinkingLevel": "minimal" if "flash" in name else "low"}
    if "2.5-pro" in name:
        return {"thinkingBudget": 128}
    return {"thinkingBudget": 0}


def _count(value: Any) -> int:
    """A token count, or 0 when the field is missing or not a number."""
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and value == value \
        and abs(value) < 2 ** 62 else 0


def to_usage(meta: Any) -> Optional[Dict[str, int]]:
    """usageMetadata → OpenAI-style usage (thinking counted as completion: it is billed as output)."""
    if not meta or not isinstance(meta, dict):
        return None
    thoughts = _count(meta.get("thoughtsTokenCount"))
    usage = {"prompt_tokens": _count(meta.get("promptTokenCount")),
             "completion_tokens": _count(meta.get("candidatesTokenCount")) + thoughts,
             "total_tokens": _count(meta.get("totalTokenCount"))}
    if thoughts:
        usage["thoughts_tokens"] = thoughts
    if _count(meta.get("cachedContentTokenCount")):
        usage["cached_tokens"] = _count(meta["cachedContentTokenCount"])
    return usage


def _split_parts(parts: Any) -> Tuple[str, str, List[Dict[str, Any]]]:
    """(text, thought text, tool calls) of a candidate's parts; ValueError naming a part of the wrong type."""
    text: List[str] = []
    thought: List[str] = []
    calls: List[Dict[str, Any]] = []
    if parts is not None and not isinstance(parts, list):
        raise ValueError(f"content.parts is {type(parts).__name__}, expected a list")
    for p in parts or ():
        if not isinstance(p, dict):
            continue
        if "functionCall" in p:
            fc = p["functionCall"]
            if not isinstance(fc, dict) or not isinstance(fc.get("name"), str):
                raise ValueError("a functionCall part has no name")
            args = fc.get("args") or {}
            calls.append({"id": f"call_{len(calls)}", "type": "function",
                          "function": {"name": fc["name"], "arguments": json.dumps(args)}})
        elif "text" in p:
            if not isinstance(p["text"], str):
                raise ValueError(f"a text part holds {type(p['text']).__name__}, expected a string")
            (thought if p.get("thought") else text).append(p["text"])
    return "".join(text), "".join(thought), calls


def _duration(value: Any) -> Optional[float]:
    m = _DURATION.match(str(value)) if value is not None else None
    if not m:
        return None
    number = float(m.group(1))
    return number / 1000.0 if m.group(2) == "ms" else number


class GeminiAdapter(ProviderAdapter):
    """Builds Gemini requests and parses replies. Pure, apart from asking `token_provider` for a token."""

    name = "gemini"

    def __init__(self, *, api_key: Optional[str] = None, base_url: Optional[str] = None,
                 project_id: Optional[str] = None, location: str = "us-central1", use_vertex_ai: bool = False,
                 token_provider: Optional[Callable[[], str]] = None, thinking: Any = None,
                 api_version: Optional[str] = None) -> None:
        gemini_thinking_config(thinking, "")  # validate early
        self.thinking = thinking
        self.use_vertex_ai = use_vertex_ai
        self._api_key = clean_secret(api_key)
        self._secrets = (self._api_key,) if self._api_key else ()
        self._token_provider = token_provider
        if use_vertex_ai:
            if not project_id:
                raise ValueError("Vertex AI needs project_id")
            if not _LOCATION.match(location or ""):
                raise ValueError(f"location must be a Google Cloud region like 'us-central1' or 'global', got {location!r}")
            host = "https://aiplatform.googleapis.com" if location == "global" else \
                f"https://{location}-aiplatform.googleapis.com"
            base = (base_url or host).rstrip("/")
            version = api_version or "v1"
            self._root = f"{base}/{version}/"
            self._prefix = (f"{self._root}projects/{quote(project_id, safe=':.')}/locations/{location}"
                            "/publishers/google/models/")
        else:
            if not self._api_key:
                raise ValueError("the Gemini Developer API needs api_key= (or GEMINI_API_KEY / GOOGLE_API_KEY)")
            base = (base_url or DEVELOPER_BASE).rstrip("/")
            if base.endswith("/models"):  # a base URL copied with its collection
                base = base[:-len("/models")]
            version = api_version or "v1beta"
            if base.endswith(("/v1beta", "/v1", "/v1alpha")):
                base, version = base.rsplit("/", 1)
            self._root = f"{base}/{version}/"
            self._prefix = f"{self._root}models/"
        self.base_url = base
        self._headers = {"Content-Type": "application/json"}
        if self._api_key and not use_vertex_ai:
            self._headers["x-goog-api-key"] = self._api_key

    # -- request ------------------------------------------------------------------------------------
    def build_request(self, messages: List[dict], model: str, params: Dict[str, Any], *,
                      stream: bool = False) -> RequestSpec:
        check_token_limits(params)
        model_id = model[len("models/"):] if model.startswith("models/") else model
        contents, system = to_contents(messages)
        body: Dict[str, Any] = {"contents": contents}
        if system:
            body["systemInstruction"] = system
        config = self._generation_config(model_id, params)
        if config:
            body["generationConfig"] = config
        safety = params.get("safetySettings") or params.get("safety_settings")
        if safety:
            body["safetySettings"] = safety
        if params.get("tools"):
            body["tools"] = tools(params["tools"])
        if params.get("tool_choice") is not None:
            body["toolConfig"] = {"functionCallingConfig": tool_choice(params["tool_choice"])}
        for key in ("toolConfig", "cachedContent", "labels"):
            if key in params:
                body[key] = params[key]
        if params.get("extra_body"):
            body.update(params["extra_body"])
        action = "streamGenerateContent?alt=sse" if stream else "generateContent"
        headers = self._headers
        if self._token_provider is not None:
            headers = dict(headers, Authorization=f"Bearer {clean_secret(self._token_provider(), 'access token')}")
        if params.get("extra_headers"):
            headers = {**headers, **check_headers(params["extra_headers"], "extra_headers")}
        return RequestSpec("POST", f"{self._model_url(model_id)}:{action}", headers, body, params.get("timeout"))

    def _model_url(self, model_id: str) -> str:
        """The model's resource URL; the name is escaped, so `?`, `#` or `/` in it cannot change the path."""
        if model_id.startswith("tunedModels/") and not self.use_vertex_ai:
            return self._root + "tunedModels/" + quote(model_id[len("tunedModels/"):], safe="-._~@")
        return self._prefix + quote(model_id, safe="-._~@")

    def _generation_config(self, model: str, params: Dict[str, Any]) -> Dict[str, Any]:
        config: Dict[str, Any] = {}
        unknown = []
        for key, value in params.items():
            if value is None or key in LIBRARY_KWARGS or key in PASS_THROUGH:
                continue
            if key in PARAM_MAP:
                config[PARAM_MAP[key]] = value
            elif key in NATIVE:
                config[key] = value
            else:
                unknown.append(key)
        if unknown:
            raise ValueError(f"Gemini does not support {sorted(unknown)}; supported: "
                             f"{sorted(set(PARAM_MAP) | {'stop', 'response_format', 'tools'})}, Gemini's own "
                             "generationConfig names, generationConfig=, safety_settings=, extra_body=")
        stop = params.get("stop")
        if stop:
            config["stopSequences"] = [stop] if isinstance(stop, str) else list(stop)
        fmt = params.get("response_format")
        if isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema"):
            config["responseMimeType"] = "application/json"
            schema = (fmt.get("json_schema") or {}).get("schema")
            if schema is not None:
                config["responseJsonSchema"] = schema
        thinking = params["thinking"] if "thinking" in params else self.thinking
        thinking_config = gemini_thinking_config(thinking, model)
        if thinking_config:
            config["thinkingConfig"] = {**thinking_config, **config.get("thinkingConfig", {})}
        config.update(params.get("generationConfig") or {})
        return config

    # -- replies ------------------------------------------------------------------------------------
    def _candidate(self, data: Dict[str, Any], model: str) -> Optional[Tuple[str, str, List[dict], Optional[str]]]:
        """(text, thought, calls, finishReason) of the first candidate, or None when there is none.

        Raises ContentBlockedError for a blocked prompt, ResponseParseError for parts of the wrong type.
        """
        feedback = as_dict(data.get("promptFeedback")) or {}
        reason = as_str(feedback.get("blockReason"))
        if reason:
            raise ContentBlockedError(f"prompt blocked by Gemini: {reason}", reason=reason, provider=self.name,
                                      model=model)
        candidates = data.get("candidates")
        if not candidates:
            return None
        cand = candidates[0] if isinstance(candidates, list) else None
        if not isinstance(cand, dict):
            raise self.shape_error("candidates[0]", cand if cand is not None else candidates, "an object",
                                   model=model)
        content = cand.get("content") or {}
        if not isinstance(content, dict):
            raise self.shape_error("candidates[0].content", content, "an object", model=model)
        try:
            text, thought, calls = _split_parts(content.get("parts"))
        except ValueError as exc:
            raise ResponseParseError(f"reply's candidates[0].{exc}", provider=self.name, model=model) from None
        return text, thought, calls, as_str(cand.get("finishReason"))

    def parse_response(self, data: Dict[str, Any], *, model: str) -> ChatCompletionResult:
        found = self._candidate(data, model)
        if found is None:
            raise ResponseParseError("reply has no candidates", provider=self.name, model=model)
        text, thought, calls, finish = found
        if not text and not calls:
            self._empty(finish, model)
        reason = FINISH.get(finish, finish.lower()) if finish else None
        return ChatCompletionResult(content=text, usage=to_usage(data.get("usageMetadata")),
                                    reasoning_content=thought or None, tool_calls=calls or None,
                                    finish_reason="tool_calls" if calls and reason == "stop" else reason)

    def parse_stream_line(self, line: str, *, model: str, calls_before: int = 0) -> Optional[StreamEvent]:
        if not line.startswith("data:"):
            return None
        chunk = decode_sse_json(line[5:], provider=self.name, model=model, redact=self.redact)
        found = self._candidate(chunk, model)
        event = StreamEvent(usage=to_usage(chunk.get("usageMetadata")), raw=chunk)
        if found is not None:
            event.content, event.reasoning, calls, finish = found
            if calls:  # each functionCall arrives whole; number them across the stream
                event.tool_calls = [dict(c, index=calls_before + i, id=f"call_{calls_before + i}")
                                    for i, c in enumerate(calls)]
            if finish:
                event.finish_reason = FINISH.get(finish, finish.lower())
        return event

    def stream_parser(self, model: str) -> Callable[[str], Optional[StreamEvent]]:
        seen = 0

        def parse(line: str) -> Optional[StreamEvent]:
            nonlocal seen
            event = self.parse_stream_line(line, model=model, calls_before=seen)
            if event is not None and event.tool_calls:
                seen += len(event.tool_calls)
            return event
        return parse

    def stream_result(self, reply: StreamReply, *, model: str) -> ChatCompletionResult:
        result = reply.result()
        if not result.content and not result.tool_calls:  # as parse_response does
            self._empty((result.finish_reason or "").upper(), model)
        if result.tool_calls and result.finish_reason == "stop":
            result.finish_reason = "tool_calls"  # OpenAI's word, as parse_response says it
        return result

    def _empty(self, finish: str, model: str) -> None:
        """Raise for a reply with no text and no calls that Gemini ended for a reason other than an answer.

        Never an empty success: blocked (SAFETY, …, and any reason not STOP/MAX_TOKENS such as LANGUAGE or
        OTHER) is `ContentBlockedError(reason=...)`; a malformed tool call is a `ResponseParseError` (retried).
        """
        if not finish or finish in FINISH:
            return
        if finish in BAD_CALL_FINISH:
            raise ResponseParseError(f"Gemini ended the reply with {finish} and no text", provider=self.name,
                                     model=model)
        raise ContentBlockedError(f"reply blocked by Gemini: {finish}", reason=finish, provider=self.name,
                                  model=model)

    def stream_complete(self, saw_done: bool, finish_reason: Optional[str]) -> bool:
        return finish_reason is not None  # Gemini has no [DONE]: the last chunk carries finishReason

    def map_error(self, status_code: int, body: Any, headers: Mapping[str, str], *, model: str) -> APIStatusError:
        err = body.get("error") if isinstance(body, dict) else None
        retry_after = None
        cls = status_error_class(status_code)
        code = None
        if isinstance(err, dict):
            code = as_str(err.get("status"))
            message = str(err.get("message") or "")
            if code:
                message = f"{message} ({code})" if len(message) < 400 else f"({code}) {message}"
            details = err.get("details")
            for detail in details if isinstance(details, list) else ():
                kind = str(detail.get("@type", "")) if isinstance(detail, dict) else ""
                if kind.endswith("google.rpc.RetryInfo"):
                    retry_after = _duration(detail.get("retryDelay"))
                elif kind.endswith("google.rpc.QuotaFailure") and status_code == 429:
                    text = json.dumps(detail.get("violations") or []).lower()
                    if "perday" in text or "per day" in text:
                        cls = QuotaExceededError
        else:
            message = body if isinstance(body, str) else json.dumps(body, default=str)
        return self.status_error(cls, message, status_code=status_code, body=body, headers=headers, model=model,
                                 code=code, retry_after=retry_after)


def _make_adapter(*, base_url: Optional[str], api_key: Optional[str], model: Optional[str] = None, thinking: Any = None,
                  default_headers: Optional[Mapping[str, str]] = None, project_id: Optional[str] = None,
                  location: str = "us-central1", use_vertex_ai: bool = False, access_token: Optional[str] = None,
                  credentials: Any = None) -> GeminiAdapter:
    token_provider = None
    if use_vertex_ai:
        from .vertex_auth import VertexTokenProvider

        project_id = project_id or os.environ.get("GOOGLE_CLOUD_PROJECT")
        if not project_id:
            raise ValueError("Vertex AI needs project_id= (or GOOGLE_CLOUD_PROJECT)")
        token_provider = VertexTokenProvider(access_token=access_token, credentials=credentials)
        api_key = None  # Vertex authenticates with a bearer token, never an API key
    return GeminiAdapter(api_key=api_key, base_url=base_url, project_id=project_id, location=location,
                         use_vertex_ai=use_vertex_ai, token_provider=token_provider, thinking=thinking)


register(Provider("gemini", _make_adapter, hosts=GOOGLE_HOSTS, model_prefixes=("gemini",), key_prefixes=("AIza",),
                  env_keys=("GEMINI_API_KEY", "GOOGLE_API_KEY"),
                  options=("project_id", "location", "use_vertex_ai", "access_token", "credentials"),
                  triggers=("use_vertex_ai",), exclusive_params=(NATIVE - {"logprobs"}) | {
                      "safetySettings", "safety_settings", "generationConfig", "toolConfig", "cachedContent"}))
