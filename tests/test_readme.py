"""The README's "Use it" snippets run as written (the server URL aside): a newcomer's first path.

The script snippet runs as a script; the notebook snippets run as cells of a notebook on a real
ipykernel (nbclient), where the saved notebook must hold each reply in one output.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from aistream._cli import embedded_server

ROOT = Path(__file__).resolve().parents[1]
README_URL = "http://127.0.0.1:8000/api/chat"


def use_it_snippets() -> list[str]:
    """The python blocks of the README's "Use it" section, in order."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Use it", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with embedded_server(demo_tokens_per_second=400) as base_url:
        yield base_url + "/api/chat"


def test_the_script_snippet_runs_and_prints_the_reply(server: str) -> None:
    script = use_it_snippets()[0]
    assert README_URL in script
    result = subprocess.run(
        [sys.executable, "-c", script.replace(README_URL, server)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "stop prompt_tokens=" in result.stdout and not result.stderr


@pytest.mark.timeout(120)
def test_the_notebook_snippets_run_and_keep_one_output_per_cell(server: str) -> None:
    notebook_send, notebook_tokens, listeners = use_it_snippets()[1:4]
    cells = [
        "from aistream import AIStream",
        notebook_send.replace(README_URL, server),
        notebook_tokens,
        listeners,
        "[m.finish_reason for m in chat.messages if m.role == 'assistant']",
    ]
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    NotebookClient(notebook, timeout=60, kernel_name="python3").execute()
    outputs = [cell.outputs for cell in notebook.cells]
    assert not any(o.output_type == "error" for cell in outputs for o in cell)
    (shown,) = outputs[1]  # the live reply: one output, updated in place
    assert "text/markdown" in shown.data
    (printed,) = outputs[2]  # the tokens() loop: one print
    assert len(printed.text.split()) >= 5
    # The listeners cell sends right after the break (no StreamBusyError) ...
    assert any("tokens so far" in o.get("text", "") for o in outputs[3])
    (state,) = outputs[4]  # ... and the partial reply stays in history, marked stopped
    assert state.data["text/plain"] == "['stop', 'stopped', 'stop']"
