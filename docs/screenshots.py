"""Make the README's screenshots again: ``make screenshots`` (needs chromium and nbconvert).

- docs/chat-page.png: the chat page of ``aistream serve`` (demo model) after a tool loop;
- docs/notebook.png: examples/notebook.ipynb executed on a real kernel, rendered by nbconvert
  the way Jupyter shows it (the live display's last state, then the rich forms).

Both are taken in Debian's headless chromium with Playwright, as the browser tests do.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbconvert import HTMLExporter
from playwright.async_api import async_playwright

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "src")]

from tests.browser.test_chat_page import ARGS  # noqa: E402
from tests.servers import running  # noqa: E402

from aistream.server import create_app  # noqa: E402
from aistream.server._page import with_chat_page  # noqa: E402

DOCS = ROOT / "docs"


def notebook_html() -> str:
    """examples/notebook.ipynb executed on a kernel, as nbconvert's HTML (no input prompts)."""
    os.environ["AISTREAM_EXAMPLE_RATE"] = "200"
    notebook = nbformat.read(ROOT / "examples" / "notebook.ipynb", as_version=4)
    client = NotebookClient(
        notebook, timeout=60, resources={"metadata": {"path": str(ROOT / "examples")}}
    )
    client.execute()
    notebook.cells = notebook.cells[:5]  # the intro, setup and the first live reply
    body, _ = HTMLExporter(template_name="lab").from_notebook_node(notebook)
    return body


async def main() -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "needs chromium (apt-get install chromium)"
    async with async_playwright() as p:
        with tempfile.TemporaryDirectory() as profile:
            browser = await p.chromium.launch_persistent_context(
                profile,
                executable_path=chromium,
                headless=True,
                args=ARGS,
                viewport={"width": 1000, "height": 640},
            )
            page = await browser.new_page()
            async with running(with_chat_page(create_app(demo_tokens_per_second=80))) as base:
                await page.goto(f"{base}/")
                await page.fill("#input", "Please add_numbers for me, then tell me about resumes")
                await page.press("#input", "Enter")
                await page.locator("section.assistant .status").wait_for(timeout=20_000)
                await page.screenshot(path=str(DOCS / "chat-page.png"))
            with tempfile.NamedTemporaryFile("w", suffix=".html", delete=False) as f:
                f.write(notebook_html())
            notebook = await browser.new_page()
            await notebook.goto(Path(f.name).as_uri())
            await notebook.screenshot(path=str(DOCS / "notebook.png"), full_page=True)
            os.unlink(f.name)
            await browser.close()
    print("wrote", DOCS / "chat-page.png", "and", DOCS / "notebook.png")


if __name__ == "__main__":
    asyncio.run(main())
