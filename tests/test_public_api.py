"""The public surface and the import rules of STYLE.md §2, enforced by scanning the source."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import aistream

SRC = Path(__file__).resolve().parents[1] / "src" / "aistream"


def test_all_is_sorted_and_complete() -> None:
    public = [
        n
        for n, v in vars(aistream).items()
        if not n.startswith("_") and not isinstance(v, ModuleType)
    ]
    assert aistream.__all__ == sorted(public, key=str.casefold)
    for name in aistream.__all__:
        assert getattr(aistream, name).__module__ == "aistream"


def test_contract_names_exist() -> None:
    for name in (
        "AIStream",
        "RetryConfig",
        "Message",
        "Usage",
        "RetryEvent",
        "ToolCall",
        "Tool",
        "ToolResult",
        "Image",
        "AIStreamError",
        "APIStatusError",
        "StreamTimeoutError",
        "ConnectionLostError",
        "ProtocolError",
        "StreamBusyError",
    ):
        assert hasattr(aistream, name), name
    for name in (
        "send",
        "tokens",
        "send_sync",
        "retry",
        "stop",
        "reset",
        "messages",
        "usage",
        "is_streaming",
        "get_messages",
        "get_usage",
        "get_is_streaming",
        "on",
    ):
        assert hasattr(aistream.AIStream, name), name


def test_errors_all_lists_exactly_the_exceptions() -> None:
    import aistream.errors

    exceptions = [
        n
        for n, v in vars(aistream.errors).items()
        if isinstance(v, type) and issubclass(v, BaseException) and v.__module__ != "builtins"
    ]
    assert sorted(aistream.errors.__all__) == sorted(exceptions)
    public = {n for n in vars(aistream.errors) if not n.startswith("_")} - {"annotations", "Any"}
    assert public == set(exceptions), "errors.py holds exceptions only"


def test_send_sync_signature_matches_send() -> None:
    import inspect

    send = inspect.signature(aistream.AIStream.send)
    sync = inspect.signature(aistream.AIStream.send_sync)
    assert list(send.parameters) == list(sync.parameters)


def test_py_typed_is_shipped() -> None:
    assert (SRC / "py.typed").exists()


def test_import_aistream_does_not_load_server_packages() -> None:
    code = (
        "import sys, aistream; "
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "('starlette', 'uvicorn', 'anyio', 'sse_starlette', 'fastapi') or m == 'aistream.server']; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def _imports(path: Path) -> list[tuple[int, str]]:
    """(level, module) of every import in a file."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(0, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append((node.level, node.module or ""))
    return found


def test_wire_layer_is_stdlib_only() -> None:
    optional = {"_json.py": {"orjson"}}  # the JSON accelerator, chosen in one place
    for path in (SRC / "_wire").glob("*.py"):
        allowed = sys.stdlib_module_names | optional.get(path.name, set())
        for level, module in _imports(path):
            if level == 0:
                assert module.split(".")[0] in allowed, f"{path.name}: {module}"
            else:
                assert level == 1, f"{path.name} imports outside _wire: {'.' * level}{module}"


def test_leaf_modules_import_nothing_from_aistream() -> None:
    for name in ("errors.py", "types.py", "_redact.py"):
        assert all(level == 0 for level, _ in _imports(SRC / name)), name


def test_client_modules_never_import_server_or_cli() -> None:
    client = [p for p in SRC.glob("*.py") if p.name not in ("_cli.py", "__main__.py")]
    for path in client:
        for level, module in _imports(path):
            top = module.split(".")[0]
            assert top not in ("starlette", "uvicorn", "sse_starlette", "fastapi"), path.name
            assert not (level == 1 and top in ("server", "_cli")), f"{path.name}: {module}"


def _runtime_imports(path: Path) -> set[str]:
    """Top-level packages a module imports when it runs (not under ``if TYPE_CHECKING:``)."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test).endswith("TYPE_CHECKING"):
            node.body = []
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def test_only_transport_pool_and_connection_import_httpx() -> None:
    """HTTP is the transport's (and the pool's it leases); the conversation names httpx only
    in annotations (``client=``)."""
    allowed = {"_transport.py", "_pool.py", "_connection.py"}
    for path in SRC.glob("*.py"):
        if {"httpx", "httpcore"} & _runtime_imports(path):
            assert path.name in allowed, path.name


def test_no_text_cites_a_document_the_repository_does_not_have() -> None:
    """API.md, WIRE.md, STYLE.md and PROVIDERS.md are the team's, not shipped: say it in place."""
    root = SRC.parents[1]
    cited = re.compile(r"\b(API|WIRE|STYLE|PROVIDERS)\.md\b")
    texts = [*SRC.rglob("*.py"), *(root / "examples").rglob("*.py"), root / "README.md"]
    texts += list((root / "examples").glob("*.md"))
    found = [
        f"{path.relative_to(root)}:{number}"
        for path in texts
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if (match := cited.search(line)) and not (root / match.group(0)).exists()
    ]
    assert found == [], found


def test_aistream_server_exports_what_a_chat_backend_takes_and_yields() -> None:
    import typing

    import aistream.server as server
    from aistream._wire import _dialect, _events

    hints = typing.get_type_hints(server.ChatBackend.stream)
    assert hints["request"] is server.ChatRequest
    (yielded,) = typing.get_args(hints["return"])
    assert yielded == server.StreamEvent
    for name in ("ChatRequest", "ChatMessage", "ToolSpec", "ToolCallPart", "ImagePart"):
        assert getattr(server, name) is getattr(_dialect, name), name
    for name in (
        "TextDelta",
        "ReasoningDelta",
        "ToolCallDone",
        "UsageReport",
        "FinishReason",
        "Metadata",
        "ServerError",
        "Done",
        "StreamEvent",
    ):
        assert getattr(server, name) is getattr(_events, name), name
    # re-exported, not moved: the wire's classes keep their module (pickles stay client-side)
    assert server.TextDelta.__module__ == "aistream._wire._events"
