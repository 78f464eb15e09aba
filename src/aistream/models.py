"""Public pydantic models: Message, Usage, ToolCall, Tool, ToolResult, Image, RetryConfig,
RetryEvent. Imports pydantic and the stdlib only."""

from __future__ import annotations

import base64
import binascii
import inspect
import json
import mimetypes
import re
import secrets
import typing
from collections.abc import Callable
from datetime import UTC, datetime
from os import PathLike
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    create_model,
    field_serializer,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

__all__ = [
    "Image",
    "Message",
    "RetryConfig",
    "RetryEvent",
    "Tool",
    "ToolCall",
    "ToolResult",
    "Usage",
]


def _new_id() -> str:
    """128 random bits as 32 hex digits (uuid4().hex without UUID's ~2 µs of bookkeeping)."""
    return secrets.token_hex(16)


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Usage(BaseModel):
    """Token counts. Accepts the camelCase wire names too (``promptTokens``, …).

    ```py
    Usage(prompt_tokens=5, completion_tokens=2)           # total_tokens is filled in: 7
    Usage.model_validate({"promptTokens": 5, "completionTokens": 2, "totalTokens": 7})
    ```
    """

    model_config = ConfigDict(
        alias_generator=to_camel, validate_by_name=True, validate_by_alias=True, frozen=True
    )

    prompt_tokens: int = Field(default=0, ge=0)
    completion_tokens: int = Field(default=0, ge=0)
    total_tokens: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _fill_total(self) -> Usage:
        if self.total_tokens == 0 and (self.prompt_tokens or self.completion_tokens):
            object.__setattr__(self, "total_tokens", self.prompt_tokens + self.completion_tokens)
        return self

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            total_tokens=self.total_tokens + other.total_tokens,
        )

    def _repr_markdown_(self) -> str:
        from ._notebook import usage_markdown

        return usage_markdown(self)

    def _repr_html_(self) -> str:
        from ._notebook import usage_html

        return usage_html(self)


class ToolCall(BaseModel):
    """A complete tool call requested by the model; `arguments` is the JSON text.

    `signature` is an opaque token some providers attach to a call and require back, verbatim,
    when the history is sent again (Gemini's ``thoughtSignature``); None for the others.
    """

    model_config = ConfigDict(frozen=True)

    id: str
    name: str
    arguments: str = "{}"
    signature: str | None = None

    def parsed_arguments(self) -> Any:
        """The arguments decoded from JSON (raises ValueError when the model sent invalid JSON)."""
        return json.loads(self.arguments or "{}")


#: Image types every provider that takes images accepts (Anthropic takes exactly these).
IMAGE_MEDIA_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")
_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)


def _sniff(data: bytes) -> str | None:
    """The media type of image bytes from their first bytes, or None."""
    for magic, media_type in _MAGIC:
        if data.startswith(magic):
            return media_type
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


class Image(BaseModel):
    """An image on a user message: a URL the provider fetches, or the bytes themselves.

    `data` holds raw bytes; in JSON (`AIStream.dump()`, ``model_dump(mode="json")``) it is
    base64 text, and base64 text is accepted back. A ``data:`` URL is read into `data` and
    `media_type`. Without `media_type`, it is recognised from the bytes (PNG, JPEG, GIF, WebP).

    ```py
    Image(url="https://example.com/cat.png")
    Image(data=png_bytes, media_type="image/png")
    Image.from_path("cat.png")
    ```
    """

    model_config = ConfigDict(frozen=True)

    url: str | None = None
    data: bytes | None = None
    media_type: str | None = None

    @field_validator("data", mode="before")
    @classmethod
    def _bytes_or_base64(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                return base64.b64decode(value, validate=True)
            except (binascii.Error, ValueError):
                raise ValueError("data must be bytes, or base64 text of them") from None
        if isinstance(value, bytearray | memoryview):
            return bytes(value)
        return value

    @field_serializer("data", when_used="json-unless-none")
    def _as_base64(self, data: bytes) -> str:
        return base64.b64encode(data).decode("ascii")

    @model_validator(mode="after")
    def _check(self) -> Image:
        if (self.url is None) == (self.data is None):
            raise ValueError(
                "an Image takes url=... or data=<bytes> (with media_type=...), exactly one; "
                "for a file use Image.from_path(path)"
            )
        if self.url is not None:
            scheme = self.url.partition(":")[0].lower()
            if scheme == "data":
                self._read_data_url(self.url)
            elif scheme not in ("http", "https"):
                raise ValueError(
                    f"an image URL must be http(s) or a data: URL; got {self.url[:60]!r} "
                    "(for a local file use Image.from_path(path))"
                )
        if self.data is not None:
            media_type = (self.media_type or _sniff(self.data) or "").lower()
            if not media_type.startswith("image/"):
                raise ValueError(
                    "cannot tell the image's type from its bytes; pass media_type= "
                    f"(one of {', '.join(IMAGE_MEDIA_TYPES)})"
                    if not media_type
                    else f"media_type must be an image type such as image/png; got {media_type!r}"
                )
            object.__setattr__(self, "media_type", media_type)
        return self

    def _read_data_url(self, url: str) -> None:
        header, comma, payload = url[5:].partition(",")
        media_type, _, encoding = header.partition(";")
        if not comma or encoding.lower() != "base64":
            raise ValueError("a data: URL image must be base64: data:image/png;base64,...")
        try:
            data = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("the data: URL's payload is not valid base64") from None
        object.__setattr__(self, "url", None)
        object.__setattr__(self, "data", data)
        if media_type and self.media_type is None:
            object.__setattr__(self, "media_type", media_type)

    @classmethod
    def from_path(cls, path: str | PathLike[str], media_type: str | None = None) -> Image:
        """An image read from a file; its type from its bytes, else from the file name.

        Raises:
            OSError: the file cannot be read.
            ValueError: the file is not an image of a known type (pass media_type=).
        """
        data = Path(path).read_bytes()
        guessed = _sniff(data) or mimetypes.guess_type(str(path))[0]
        return cls(data=data, media_type=media_type or guessed)

    def base64(self) -> str:
        """The bytes as base64 text ("" for a URL image)."""
        return base64.b64encode(self.data).decode("ascii") if self.data is not None else ""

    def data_url(self) -> str:
        """The URL, or the bytes as a ``data:`` URL (what OpenAI's ``image_url`` takes)."""
        if self.url is not None:
            return self.url
        return f"data:{self.media_type};base64,{self.base64()}"

    def __repr_args__(self) -> Any:
        if self.data is not None:
            return [("data", f"<{len(self.data)} bytes>"), ("media_type", self.media_type)]
        return [("url", self.url)]


_TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_SECTION = re.compile(
    r"^(Args|Arguments|Parameters|Params|Returns|Return|Yields|Raises|Example|Examples|Note|"
    r"Notes)\s*:\s*$"
)
_ARG_LINE = re.compile(r"^(\*{0,2}\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)$")
_SPHINX_PARAM = re.compile(r"^:param\s+(?:[^:]*\s)?(\w+)\s*:\s*(.*)$")


def _parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """The description (text before any section) and the parameter descriptions of a
    Google-style (``Args:``) or Sphinx-style (``:param x:``) docstring."""
    summary: list[str] = []
    params: dict[str, str] = {}
    section: str | None = None
    current: str | None = None
    arg_indent = -1  # the indentation of the first parameter line of an Args section
    for raw in doc.splitlines():
        line = raw.strip()
        indent = len(raw) - len(raw.lstrip())
        header = _SECTION.match(line)
        sphinx = _SPHINX_PARAM.match(line)
        if header:
            section, current, arg_indent = header.group(1), None, -1
        elif sphinx:
            section, current = "Args", sphinx.group(1)
            params[current] = sphinx.group(2).strip()
        elif line.startswith(":"):
            section, current = "Other", None
        elif section is None:
            summary.append(line)
        elif section in ("Args", "Arguments", "Parameters", "Params") and line:
            match = _ARG_LINE.match(line)
            if match and (arg_indent < 0 or indent <= arg_indent):
                arg_indent = indent
                current = match.group(1).lstrip("*")
                params[current] = match.group(2).strip()
            elif current is not None:
                params[current] = f"{params[current]} {line}".strip()
    return "\n".join(summary).strip(), {k: v for k, v in params.items() if v}


def _strip_titles(schema: Any) -> Any:
    """A JSON Schema without pydantic's generated ``title`` keys (noise for a model)."""
    if isinstance(schema, dict):
        out: dict[str, Any] = {}
        for key, value in schema.items():
            if key == "title" and isinstance(value, str):
                continue
            if key in ("properties", "$defs") and isinstance(value, dict):
                out[key] = {name: _strip_titles(sub) for name, sub in value.items()}
            else:
                out[key] = _strip_titles(value)
        return out
    if isinstance(schema, list):
        return [_strip_titles(item) for item in schema]
    return schema


def _explain(error: ValidationError) -> str:
    """What failed in a tool's arguments: each field and why, one after the other."""
    parts = []
    for item in error.errors(include_url=False):
        where = ".".join(str(p) for p in item["loc"]) or "arguments"
        parts.append(f"{where}: {item['msg']}")
    return "invalid arguments: " + "; ".join(parts)


class Tool(BaseModel):
    """A tool the model may call: its name, what it does, the JSON Schema of its arguments,
    and the handler that runs it (None: you answer with `AIStream.send_tool_results`).

    A plain function (or coroutine function) becomes a Tool with `Tool.from_function`, which
    `AIStream(tools=[...])` does for you: name = the function's name, description = its
    docstring (``Args:`` lines describe the parameters), parameters = the JSON Schema pydantic
    builds from the type hints; its arguments are validated against the signature. A Tool
    made with a `parameters` dict sends that schema as given; its arguments must be a JSON
    object. Handlers are called with the arguments as keyword arguments.

    ```py
    Tool(name="lookup", description="Find a word.", parameters={"type": "object",
         "properties": {"word": {"type": "string"}}, "required": ["word"]}, handler=lookup)
    Tool.from_function(get_weather)
    ```
    """

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    name: str
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})
    handler: Callable[..., Any] | None = Field(default=None, exclude=True, repr=False)

    # The pydantic model of a function's arguments (fields p0, p1, ... aliased to the
    # parameter names, so no name can clash with BaseModel's own attributes).
    _arguments: type[BaseModel] | None = PrivateAttr(default=None)
    _fields: tuple[tuple[str, str], ...] = PrivateAttr(default=())

    @field_validator("name")
    @classmethod
    def _check_name(cls, name: str) -> str:
        if not _TOOL_NAME.match(name):
            raise ValueError(
                f"a tool name is 1 to 64 letters, digits, '_' or '-' (what every provider "
                f"accepts); got {name[:80]!r}"
            )
        return name

    @field_validator("parameters")
    @classmethod
    def _check_parameters(cls, parameters: dict[str, Any]) -> dict[str, Any]:
        if parameters.get("type", "object") != "object":
            raise ValueError(
                'parameters must be a JSON Schema of an object ({"type": "object", '
                f'"properties": {{...}}}}); got type {parameters.get("type")!r}'
            )
        return parameters

    @classmethod
    def from_function(
        cls,
        function: Callable[..., Any],
        *,
        name: str | None = None,
        description: str | None = None,
    ) -> Tool:
        """A Tool that runs `function`, its schema built from the signature by pydantic.

        Raises:
            TypeError: `function` takes ``*args`` / ``**kwargs`` or positional-only
                parameters, or a parameter type has no JSON Schema.
        """
        if not callable(function):
            raise TypeError(f"a tool must be a function or a Tool; got {type(function).__name__}")
        tool_name = name or getattr(function, "__name__", None) or type(function).__name__
        summary, documented = _parse_docstring(inspect.getdoc(function) or "")
        try:
            signature = inspect.signature(function)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"tool {tool_name!r}: cannot read its signature ({exc})") from None
        try:
            hints = _type_hints(function)
        except Exception as exc:  # a forward reference that does not resolve, say
            raise TypeError(f"tool {tool_name!r}: cannot read its type hints ({exc})") from None
        fields: dict[str, Any] = {}
        pairs: list[tuple[str, str]] = []
        for i, param in enumerate(signature.parameters.values()):
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD, param.POSITIONAL_ONLY):
                raise TypeError(
                    f"tool {tool_name!r}: parameter {param.name!r} cannot be passed by keyword "
                    "(handlers are called with keyword arguments); use plain named parameters"
                )
            default = ... if param.default is param.empty else param.default
            annotation = hints.get(param.name, Any)
            field = f"p{i}"
            fields[field] = (
                annotation,
                Field(default, alias=param.name, description=documented.get(param.name)),
            )
            pairs.append((field, param.name))
        config = ConfigDict(extra="forbid", validate_by_alias=True, validate_by_name=False)
        try:
            model = create_model(f"{tool_name}_arguments", __config__=config, **fields)
            schema = _strip_titles(model.model_json_schema())
        except Exception as exc:  # pydantic cannot describe a parameter's type
            raise TypeError(
                f"tool {tool_name!r}: its parameters have no JSON Schema ({exc}); use JSON "
                "types (str, int, float, bool, list, dict, Literal, pydantic models)"
            ) from None
        schema.setdefault("properties", {})
        tool = cls(
            name=tool_name,
            description=summary if description is None else description,
            parameters=schema,
            handler=function,
        )
        tool._arguments = model
        tool._fields = tuple(pairs)
        return tool

    def validate_arguments(self, arguments: str) -> dict[str, Any]:
        """The keyword arguments for the handler from the model's JSON text.

        Raises:
            ValueError: not a JSON object, or (for a function tool) a field that fails its
                type: the message names each failing field and why.
        """
        try:
            value = json.loads(arguments or "{}")
        except ValueError as exc:
            raise ValueError(f"the arguments are not valid JSON ({exc})") from None
        if not isinstance(value, dict):
            raise ValueError(f"the arguments must be a JSON object; got {type(value).__name__}")
        if self._arguments is None:
            return value
        try:
            parsed = self._arguments.model_validate(value)
        except ValidationError as exc:
            raise ValueError(_explain(exc)) from None
        return {alias: getattr(parsed, field) for field, alias in self._fields}


def _type_hints(function: Callable[..., Any]) -> dict[str, Any]:
    """The resolved type hints of a function, a method or a callable object's __call__."""
    if inspect.isfunction(function) or inspect.ismethod(function):
        return typing.get_type_hints(function, include_extras=True)
    call = inspect.getattr_static(type(function), "__call__", None)
    if inspect.isfunction(call):
        return typing.get_type_hints(call, include_extras=True)
    return {}


class ToolResult(BaseModel):
    """Payload of the ``tool-result`` event: what a tool answered to one call.

    `content` is the text the model sees (a handler's str as it is, anything else as JSON);
    `is_error` marks a handler that raised or arguments that failed validation.
    """

    model_config = ConfigDict(frozen=True)

    call_id: str
    name: str
    content: str
    is_error: bool = False


class Message(BaseModel):
    """One message of the conversation.

    ``role="tool"`` messages answer one tool call each (`tool_call_id`; `is_error` when the
    tool failed); user messages may carry `images`; assistant replies may carry `tool_calls`.

    ```py
    reply = await chat.send("Hi")
    reply.role, reply.content, reply.finish_reason, reply.usage
    ```
    """

    id: str = Field(default_factory=_new_id)
    role: Literal["system", "user", "assistant", "tool"]
    content: str
    timestamp: datetime = Field(default_factory=_utcnow)
    finish_reason: str | None = None
    usage: Usage | None = None
    reasoning: str | None = None
    tool_calls: list[ToolCall] = Field(default_factory=list)
    tool_call_id: str | None = None
    is_error: bool = False
    images: list[Image] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check_role_fields(self) -> Message:
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a tool message needs tool_call_id: the id of the call it answers")
        if self.role != "tool" and (self.tool_call_id is not None or self.is_error):
            raise ValueError("tool_call_id and is_error belong to tool messages (role='tool')")
        if self.images and self.role != "user":
            raise ValueError("images belong to user messages (role='user')")
        if self.tool_calls and self.role != "assistant":
            raise ValueError("tool_calls belong to assistant messages (role='assistant')")
        return self

    def _repr_markdown_(self) -> str:
        """Jupyter's form: the role, the content as text (markup escaped), tool calls, usage."""
        from ._notebook import message_markdown

        return message_markdown(self)

    def _repr_html_(self) -> str:
        from ._notebook import message_html

        return message_html(self)


class RetryConfig(BaseModel):
    """How failed attempts are retried.

    Without jitter attempt n waits ``min(initial_delay * 2**(n-1), max_delay)`` (exponential) or
    ``min(initial_delay * n, max_delay)`` (linear); with jitter that delay is multiplied by a
    factor in [0.75, 1.0]. A server's ``Retry-After`` / ``retry-after-ms`` wins and is never
    jittered.

    ```py
    RetryConfig(max_retries=5, backoff="linear", initial_delay=0.5, max_delay=4.0)
    ```
    """

    model_config = ConfigDict(frozen=True)

    max_retries: int = Field(default=3, ge=0)
    backoff: Literal["exponential", "linear"] = "exponential"
    initial_delay: float = Field(default=1.0, ge=0)
    max_delay: float = Field(default=10.0, ge=0)
    jitter: bool = True

    @model_validator(mode="after")
    def _check_delays(self) -> RetryConfig:
        if self.max_delay < self.initial_delay:
            raise ValueError(
                f"max_delay ({self.max_delay}) is smaller than initial_delay "
                f"({self.initial_delay}); set max_delay >= initial_delay"
            )
        return self


class RetryEvent(BaseModel):
    """Payload of the ``retry`` event: a failed attempt will be retried after `delay` seconds.

    `resume` is True when the next attempt continues the same stream (``Last-Event-ID``), so
    nothing is repeated; False when the partial reply was discarded and the reply restarts.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True)

    attempt: int
    delay: float
    error: Exception
    resume: bool
