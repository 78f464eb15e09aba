"""Running tools between the steps of a send: arguments validated, handlers run, results made.

Imports `models` and the stdlib (pydantic_core for JSON). No I/O of its own: a handler does
what it does. Every failure of a tool (arguments that do not validate, a handler that raises,
a result that is not JSON) becomes a result with ``is_error=True`` that the model sees, and a
WARNING in the log; nothing here raises into the turn.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import pydantic_core

from .models import Tool, ToolCall, ToolResult

__all__ = ["coerce_tools", "parse_result", "result_content", "run_call", "run_calls"]

log = logging.getLogger("aistream")

_EXAMPLE = "AIStream(url, tools=[get_weather]) with `def get_weather(city: str) -> dict: ...`"


def coerce_tools(tools: object) -> dict[str, Tool]:
    """`tools=` as Tools by name: functions become `Tool.from_function`, Tools stay.

    Raises:
        TypeError: not a list of functions and Tools, or a function without a JSON Schema.
        ValueError: two tools with one name.
    """
    if tools is None:
        return {}
    if isinstance(tools, str | bytes | Mapping) or not isinstance(tools, Iterable):
        raise TypeError(
            f"tools must be a list of functions or Tool objects, not {type(tools).__name__}; "
            f"e.g. {_EXAMPLE}"
        )
    out: dict[str, Tool] = {}
    for item in tools:
        if isinstance(item, Tool):
            tool = item
        elif callable(item):
            tool = Tool.from_function(item)
        else:
            raise TypeError(
                f"each tool must be a function or a Tool, not {type(item).__name__} "
                f"({item!r:.60}); e.g. {_EXAMPLE}"
            )
        if tool.name in out:
            raise ValueError(
                f"two tools are named {tool.name!r}; give one another name "
                "(Tool.from_function(f, name=...))"
            )
        out[tool.name] = tool
    return out


def result_content(value: Any) -> str:
    """A handler's return value as the tool message's text: a str as it is, else JSON."""
    if isinstance(value, str):
        return value
    return pydantic_core.to_json(value).decode()


async def run_calls(calls: list[ToolCall], tools: Mapping[str, Tool]) -> list[ToolResult]:
    """Run every call at once (sync handlers in worker threads); one result per call, in order.

    Cancelling this cancels the async handlers; a sync handler already running in its thread
    finishes there and its result is dropped.
    """
    tasks = [asyncio.ensure_future(run_call(call, tools)) for call in calls]
    try:
        return list(await asyncio.gather(*tasks))
    except asyncio.CancelledError:
        for task in tasks:
            task.cancel()
        await asyncio.wait(tasks)
        raise


async def run_call(call: ToolCall, tools: Mapping[str, Tool]) -> ToolResult:
    """One call: validate its arguments, run the handler, make the result (never raises but
    for cancellation)."""
    tool = tools.get(call.name)
    if tool is None or tool.handler is None:
        known = ", ".join(sorted(n for n, t in tools.items() if t.handler is not None))
        return _failure(call, f"there is no tool named {call.name!r}; the tools are: {known}")
    try:
        arguments = tool.validate_arguments(call.arguments)
    except ValueError as exc:
        return _failure(call, f"{call.name}: {exc}")
    try:
        value = await _invoke(tool.handler, arguments)
        return ToolResult(call_id=call.id, name=call.name, content=result_content(value))
    except Exception as exc:
        log.warning("tool %s raised", call.name, exc_info=True)
        return ToolResult(
            call_id=call.id, name=call.name, content=f"{type(exc).__name__}: {exc}", is_error=True
        )


async def _invoke(handler: Callable[..., Any], arguments: dict[str, Any]) -> Any:
    if inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(
        getattr(handler, "__call__", None)  # noqa: B004 - an object whose __call__ is async
    ):
        return await handler(**arguments)
    value = await asyncio.to_thread(handler, **arguments)
    if inspect.isawaitable(value):  # a sync wrapper that returned a coroutine
        value = await value
    return value


def _failure(call: ToolCall, message: str) -> ToolResult:
    log.warning("tool call %s failed: %s", call.name, message)
    return ToolResult(call_id=call.id, name=call.name, content=message, is_error=True)


def parse_result(value: Any) -> tuple[str, bool]:
    """A caller's result for `send_tool_results`: (content, is_error). A ToolResult keeps its
    flag, an exception is an error result, anything else is content (str, or JSON)."""
    if isinstance(value, ToolResult):
        return value.content, value.is_error
    if isinstance(value, BaseException):
        return f"{type(value).__name__}: {value}", True
    try:
        return result_content(value), False
    except pydantic_core.PydanticSerializationError as exc:
        raise TypeError(
            f"a tool result must be a str or a JSON-able value; got {type(value).__name__} ({exc})"
        ) from None
