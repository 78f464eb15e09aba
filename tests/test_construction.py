"""AIStream's constructor refuses what cannot work, at construction, with a correct call shown."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pydantic
import pytest

from aistream import AIStream, APIStatusError, RetryConfig
from tests.loopback import Handler, Reply, Request

URL = "http://127.0.0.1:9/api/chat"


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        pytest.param({"retry": 5}, TypeError, "retry=RetryConfig(max_retries=5)", id="retry-int"),
        pytest.param({"retry": "exponential"}, TypeError, "not str", id="retry-str"),
        pytest.param({"retry": {"retries": 2}}, TypeError, "max_retries", id="retry-dict-key"),
        pytest.param({"timeout": "30"}, TypeError, "timeout=30.0", id="timeout-str"),
        pytest.param({"timeout": 0}, ValueError, "positive", id="timeout-zero"),
        pytest.param({"stall_timeout": True}, TypeError, "seconds", id="stall-bool"),
        pytest.param({"headers": [("a", "b")]}, TypeError, "headers={", id="headers-list"),
        pytest.param({"headers": {"X-Key": 5}}, TypeError, "str to str", id="header-int"),
        pytest.param({"headers": {"X-Key": "s\u00e9cret"}}, ValueError, "non-ASCII", id="ascii"),
        pytest.param({"headers": {"X-Key": "k\n"}}, ValueError, "line break", id="header-lf"),
        pytest.param(
            {"headers": {"X-A": "a\r\nInjected: 1"}}, ValueError, "line break", id="header-crlf"
        ),
        pytest.param({"headers": {"X Key": "v"}}, ValueError, "header name", id="header-name"),
        pytest.param({"model": 4}, TypeError, "model name", id="model"),
        pytest.param({"system_prompt": ["x"]}, TypeError, "system_prompt", id="system"),
        pytest.param({"on_token": "print"}, TypeError, "on_token", id="listener"),
        pytest.param({"client": "http://x"}, TypeError, "httpx.AsyncClient()", id="client"),
        pytest.param({"options": [1]}, TypeError, "options", id="options"),
        pytest.param({"max_event_bytes": 0}, ValueError, "max_event_bytes", id="event-bytes"),
        pytest.param({"protocol": None}, TypeError, "protocol", id="protocol"),
    ],
)
def test_a_wrong_argument_fails_at_construction(
    kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error) as info:
        AIStream(URL, **kwargs)
    assert message in str(info.value)
    assert "s\u00e9cret" not in str(info.value)  # a header value may be a key


def test_retry_accepts_a_dict_of_retry_config_fields() -> None:
    chat = AIStream(URL, retry={"max_retries": 2, "backoff": "linear"})
    assert chat._retry == RetryConfig(max_retries=2, backoff="linear")
    with pytest.raises(pydantic.ValidationError, match="max_retries"):
        AIStream(URL, retry={"max_retries": -1})


def test_send_sync_raises_the_real_error_alone(
    threaded_server: Callable[[Handler], str],
) -> None:
    async def refuse(request: Request, reply: Reply) -> None:
        await reply.body(401, {"error": {"message": "bad key", "type": "auth"}})

    chat = AIStream(threaded_server(refuse) + "/v1/chat/completions")
    with pytest.raises(APIStatusError) as info:
        chat.send_sync("hi")
    assert info.value.status_code == 401
    chain: BaseException | None = info.value
    while chain is not None:  # no "During handling of the above exception" in the traceback
        assert "no running event loop" not in str(chain)
        chain = chain.__context__
