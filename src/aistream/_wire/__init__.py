"""The sans-I/O core: bytes in, typed events out. No I/O, no clock, no logging.

Stdlib only, but for the optional JSON accelerator (orjson) that `_json` alone imports.
`_reader.StreamReader` composes a framing decoder (`_sse`, `_ndjson`) with a dialect (`_native`,
`_openai`, `_anthropic`, `_ollama`, `_responses`, `_gemini`; the contract and their shared
helpers in `_dialect`) into the pipeline the transport drives.
"""

from __future__ import annotations
