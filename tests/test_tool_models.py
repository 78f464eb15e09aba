"""Tool, ToolResult, Image and the new Message fields (API.md §5): schemas, validation, JSON."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Literal

import pytest
from pydantic import BaseModel, ValidationError

from aistream import Image, Message, Tool, ToolCall, ToolResult

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 8


def get_weather(city: str, unit: Literal["celsius", "fahrenheit"] = "celsius") -> dict[str, object]:
    """Current weather for a city.

    Args:
        city: The city's name,
            in English.
        unit: The unit of the temperature.
    """
    return {"city": city, "unit": unit}


def test_function_tool_schema_comes_from_hints_and_docstring() -> None:
    tool = Tool.from_function(get_weather)
    assert tool.name == "get_weather"
    assert tool.description == "Current weather for a city."
    assert tool.parameters == {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "city": {"type": "string", "description": "The city's name, in English."},
            "unit": {
                "type": "string",
                "enum": ["celsius", "fahrenheit"],
                "default": "celsius",
                "description": "The unit of the temperature.",
            },
        },
        "required": ["city"],
    }
    assert tool.handler is get_weather


def test_function_tool_arguments_are_validated_against_the_signature() -> None:
    tool = Tool.from_function(get_weather)
    assert tool.validate_arguments('{"city": "Paris"}') == {"city": "Paris", "unit": "celsius"}
    with pytest.raises(ValueError, match=r"city: Field required"):
        tool.validate_arguments("{}")
    with pytest.raises(ValueError, match=r"unit: Input should be 'celsius' or 'fahrenheit'"):
        tool.validate_arguments('{"city": "Paris", "unit": "kelvin"}')
    with pytest.raises(ValueError, match="not valid JSON"):
        tool.validate_arguments('{"city": ')
    with pytest.raises(ValueError, match="must be a JSON object; got list"):
        tool.validate_arguments("[1]")


class Point(BaseModel):
    x: int
    y: int


def test_parameter_names_may_shadow_basemodel_attributes_and_models_arrive_as_models() -> None:
    def draw(json: str, copy: int, at: Point) -> str:
        """Draw."""
        return ""

    tool = Tool.from_function(draw)
    assert set(tool.parameters["properties"]) == {"json", "copy", "at"}
    args = tool.validate_arguments('{"json": "a", "copy": 2, "at": {"x": 1, "y": 2}}')
    assert args == {"json": "a", "copy": 2, "at": Point(x=1, y=2)}


def test_tool_with_a_schema_only_needs_an_object() -> None:
    tool = Tool(name="lookup", description="Find.", parameters={"type": "object"})
    assert tool.validate_arguments('{"anything": [1]}') == {"anything": [1]}
    with pytest.raises(ValueError, match="JSON object"):
        tool.validate_arguments('"text"')


@pytest.mark.parametrize("name", ["", "has space", "x" * 65, "dot.ted"])
def test_tool_names_providers_refuse_are_refused(name: str) -> None:
    with pytest.raises(ValidationError, match="tool name"):
        Tool(name=name)


def test_functions_that_cannot_be_called_by_keyword_are_refused() -> None:
    def variadic(*args: int) -> None: ...

    with pytest.raises(TypeError, match="keyword"):
        Tool.from_function(variadic)


def test_image_forms_and_base64_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "cat.png"
    path.write_bytes(PNG)
    image = Image.from_path(path)
    assert image.media_type == "image/png" and image.data == PNG
    dumped = image.model_dump(mode="json")
    assert dumped["data"] == base64.b64encode(PNG).decode()
    assert Image.model_validate(dumped) == image
    assert Image(url="data:image/png;base64," + dumped["data"]) == image
    assert Image(url="https://example.com/cat.png").data_url() == "https://example.com/cat.png"
    assert "bytes>" in repr(image) and "\\x00" not in repr(image)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, "exactly one"),
        ({"url": "file:///etc/passwd"}, "http"),
        ({"data": b"not an image"}, "media_type"),
        ({"data": PNG, "media_type": "text/plain"}, "image type"),
        ({"data": "%%%"}, "base64"),
    ],
)
def test_bad_images_say_what_to_do(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValidationError, match=match):
        Image(**kwargs)  # type: ignore[arg-type]


def test_message_kinds_round_trip_through_json() -> None:
    messages = [
        Message(role="system", content="Be brief."),
        Message(role="user", content="What is this?", images=[Image(data=PNG)]),
        Message(
            role="assistant",
            content="",
            finish_reason="tool_calls",
            tool_calls=[ToolCall(id="c1", name="get_weather", arguments='{"city":"Paris"}')],
        ),
        Message(role="tool", content="boom", tool_call_id="c1", is_error=True),
    ]
    for message in messages:
        assert Message.model_validate_json(message.model_dump_json()) == message
        assert Message.model_validate(message.model_dump(mode="json")) == message


@pytest.mark.parametrize(
    "kwargs",
    [
        {"role": "tool", "content": "x"},
        {"role": "user", "content": "x", "tool_call_id": "c1"},
        {"role": "assistant", "content": "x", "images": [Image(data=PNG)]},
        {"role": "user", "content": "x", "tool_calls": [ToolCall(id="c", name="n")]},
    ],
)
def test_message_fields_belong_to_their_roles(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        Message(**kwargs)  # type: ignore[arg-type]


def test_tool_result_is_a_frozen_value() -> None:
    result = ToolResult(call_id="c1", name="get_weather", content="{}")
    assert result.is_error is False
    with pytest.raises(ValidationError):
        result.content = "x"  # type: ignore[misc]
