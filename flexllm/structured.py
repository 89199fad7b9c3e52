"""Structured output: a `response_format` schema sent in its wire form, and replies checked against it.

`response_format` may be a Pydantic v2 model class, OpenAI's `{"type": "json_schema", "json_schema":
{"name", "schema", ...}}`, or a bare JSON Schema dict. The request always carries OpenAI's wrapped form;
each adapter maps it to its provider's native field (OpenAI passes it on, Gemini sends
`responseJsonSchema`; a new adapter calls `json_schema_of`). Replies are parsed and validated — models
with Pydantic, schemas with `jsonschema` — both from the optional extra `flexllm[structured]`.
`{"type": "json_object"}` and `{"type": "text"}` pass through untouched (no schema to check).
"""
from __future__ import annotations

import json
import re
import threading
from typing import Any, Dict, Mapping, Optional, Tuple

from ._hashing import canonical_json
from .errors import ResponseValidationError

__all__ = ["DEFAULT_VALIDATION_RETRIES", "ResponseSchema", "fill_parsed", "json_schema_of", "prepare",
           "response_schema"]

DEFAULT_VALIDATION_RETRIES = 2
#: response_format types that are not a schema: sent as given, never validated
PASS_THROUGH = frozenset({"json_object", "text"})
_NAME_CHARS = re.compile(r"[^a-zA-Z0-9_-]")
_FENCE = re.compile(r"^\s*```[a-zA-Z0-9_-]*\s*\n(.*?)\n?```\s*$", re.DOTALL)
_REPLY_SHOWN = 200
_MEMO_MAX = 256
_memo: Dict[Any, "ResponseSchema"] = {}
_memo_lock = threading.Lock()


class ResponseSchema:
    """One normalised response_format: its JSON Schema, the wire form and a validator. Immutable, shareable."""

    __slots__ = ("name", "schema", "model", "wire", "_validator")

    def __init__(self, name: str, schema: Dict[str, Any], wire: Dict[str, Any], model: Any = None) -> None:
        self.name = name
        self.schema = schema
        self.wire = wire
        #: the Pydantic model class, or None for a JSON Schema dict
        self.model = model
        self._validator: Any = None
        if model is None:
            self._validator = _schema_validator(schema)

    def parse(self, text: Optional[str], *, provider: Optional[str] = None, model: Optional[str] = None) -> Any:
        """The reply as a model instance (or a JSON value); ResponseValidationError if it does not fit."""
        text = _unfence(text or "")
        if self.model is not None:
            from pydantic import ValidationError

            try:
                return self.model.model_validate_json(text)
            except ValidationError as exc:
                raise _invalid(_pydantic_first_error(exc), text, provider, model) from None
        try:
            value = json.loads(text)
        except ValueError as exc:
            raise _invalid(f"not valid JSON ({exc})", text, provider, model) from None
        error = _first_schema_error(self._validator, value)
        if error is not None:
            raise _invalid(error, text, provider, model)
        return value


def response_schema(response_format: Any) -> Optional[ResponseSchema]:
    """The ResponseSchema of a `response_format` value, or None when it is no schema (json_object, text).

    ValueError (naming `response_format`) for a schema that is not valid JSON Schema, a class that is not
    a Pydantic v2 model, or a model without a JSON schema. Results are memoised: a batch pays once.
    """
    if response_format is None:
        return None
    if isinstance(response_format, type):
        key: Any = response_format
    elif isinstance(response_format, Mapping):
        if response_format.get("type") in PASS_THROUGH:
            return None
        key = canonical_json(response_format)
    else:
        raise ValueError("response_format must be a Pydantic model class, a JSON Schema dict or "
                         f"{{'type': 'json_schema', 'json_schema': {{...}}}}, got {type(response_format).__name__}")
    found = _memo.get(key)
    if found is None:
        found = _build(response_format)
        with _memo_lock:
            if len(_memo) >= _MEMO_MAX:
                _memo.clear()
            _memo[key] = found
    return found


def prepare(params: Dict[str, Any]) -> Tuple[Dict[str, Any], Optional[ResponseSchema], int]:
    """`(params with response_format in its wire form, schema or None, validation_retries)`.

    Raises ValueError before any request for a bad response_format or validation_retries.
    """
    retries = params.get("validation_retries", DEFAULT_VALIDATION_RETRIES)
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ValueError(f"validation_retries must be an int >= 0, got {retries!r}")
    schema = response_schema(params.get("response_format"))
    if schema is None:
        return params, None, retries
    return {**params, "response_format": schema.wire}, schema, retries


def fill_parsed(result: Any, schema: ResponseSchema, *, provider: Optional[str] = None,
                model: Optional[str] = None) -> None:
    """Set `result.parsed` from `result.content`; ResponseValidationError when it does not fit.

    A turn that only calls tools carries no answer to validate and is left as it is.
    """
    if result.tool_calls and not result.content:
        return
    result.parsed = schema.parse(result.content, provider=provider, model=model)


def json_schema_of(response_format: Any) -> Optional[Tuple[str, Dict[str, Any]]]:
    """`(name, schema)` of a wire-form `{"type": "json_schema", ...}` response_format, else None.

    The hook for adapters: each maps this pair to its provider's native structured-output field.
    """
    if not isinstance(response_format, Mapping) or response_format.get("type") != "json_schema":
        return None
    spec = response_format.get("json_schema")
    if not isinstance(spec, Mapping) or not isinstance(spec.get("schema"), Mapping):
        return None
    return str(spec.get("name") or "response"), dict(spec["schema"])


# -- building ----------------------------------------------------------------------------------------------

def _build(fmt: Any) -> ResponseSchema:
    if isinstance(fmt, type):
        return _from_model(fmt)
    if fmt.get("type") == "json_schema":
        spec = fmt.get("json_schema")
        if not isinstance(spec, Mapping) or not isinstance(spec.get("schema"), Mapping):
            raise ValueError("response_format {'type': 'json_schema'} needs 'json_schema': {'name': ..., "
                             "'schema': {...}}")
        schema = dict(spec["schema"])
        _schema_validator(schema)
        return ResponseSchema(str(spec.get("name") or "response"), schema, dict(fmt))
    schema = dict(fmt)
    _schema_validator(schema)
    name = _NAME_CHARS.sub("_", str(schema.get("title") or "response"))[:64] or "response"
    return ResponseSchema(name, schema, _wire(name, schema))


def _from_model(cls: type) -> ResponseSchema:
    try:
        from pydantic import BaseModel
    except ImportError:
        raise ValueError("response_format is a class but pydantic is not installed: "
                         "pip install 'flexllm[structured]'") from None
    if not issubclass(cls, BaseModel):
        raise ValueError(f"response_format class {cls.__name__} is not a Pydantic v2 BaseModel")
    try:
        schema = cls.model_json_schema()
    except Exception as exc:  # PydanticInvalidForJsonSchema, user code in the schema hooks
        raise ValueError(f"response_format model {cls.__name__} has no JSON schema: {exc}") from None
    name = _NAME_CHARS.sub("_", cls.__name__)[:64] or "response"
    return ResponseSchema(name, schema, _wire(name, schema), model=cls)


def _wire(name: str, schema: Dict[str, Any]) -> Dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema}}


def _schema_validator(schema: Dict[str, Any]) -> Any:
    try:
        import jsonschema
    except ImportError:
        raise ValueError("a JSON Schema response_format needs jsonschema: pip install 'flexllm[structured]'") \
            from None
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft202012Validator)
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError as exc:
        where = "/".join(str(p) for p in exc.path)
        raise ValueError(f"response_format is not a valid JSON Schema: {exc.message}"
                         + (f" (at {where})" if where else "")) from None
    return cls(schema)


# -- validating --------------------------------------------------------------------------------------------

def _unfence(text: str) -> str:
    """The JSON inside a lone Markdown code fence (some models add one), else `text` unchanged."""
    if "```" in text:
        m = _FENCE.match(text)
        if m:
            return m.group(1)
    return text


def _first_schema_error(validator: Any, value: Any) -> Optional[str]:
    from jsonschema.exceptions import best_match

    error = best_match(validator.iter_errors(value))
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path)
    return f"{error.message}" + (f" (at {where})" if where else "")


def _pydantic_first_error(exc: Any) -> str:
    errors = exc.errors(include_url=False, include_input=False)
    if not errors:
        return str(exc)
    first = errors[0]
    if first.get("type") == "json_invalid":
        return f"not valid JSON ({first.get('msg')})"
    where = ".".join(str(p) for p in first.get("loc") or ())
    return f"{first.get('msg')}" + (f" (at {where})" if where else "")


def _invalid(error: str, text: str, provider: Optional[str], model: Optional[str]) -> ResponseValidationError:
    shown = text[:_REPLY_SHOWN]
    return ResponseValidationError(
        f"reply does not match the response schema: {error}; reply starts {shown!r}"
        + ("" if len(text) <= _REPLY_SHOWN else " …"),
        error=error, reply=shown, provider=provider, model=model)
