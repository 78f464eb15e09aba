"""The demo model's bundled sentences: plain statements about streaming, networks and models.

Data only. Each sentence stands on its own, so any selection reads as text.
"""

from __future__ import annotations

from typing import Final

SENTENCES: Final[tuple[str, ...]] = (
    "Streaming sends each word as soon as it exists, so the first arrives long before the last.",
    "A reply that appears word by word feels faster, even when the total time is the same.",
    "Server-Sent Events are plain text over HTTP, so proxies and browsers handle them well.",
    "Every event in this stream carries an id, so a dropped connection can pick up again.",
    "When the connection breaks, the client sends its last id and the server replays the rest.",
    "Nothing is repeated after a resume, because the server only sends the events that came later.",
    "A heartbeat comment every few seconds keeps idle connections open through strict proxies.",
    "Networks drop connections more often than people expect, especially on phones and trains.",
    "Retrying with a growing delay gives a busy server room to recover instead of piling on.",
    "A little random jitter keeps many clients from retrying at exactly the same moment.",
    "Tokens are small pieces of text, and a language model produces them one at a time.",
    "Counting tokens matters, because providers measure both cost and limits in tokens.",
    "The usage report at the end of a reply says how many tokens went in and how many came out.",
    "A good client keeps the partial reply when the user presses stop instead of dropping it.",
    "Backpressure means a slow reader can slow down a writer instead of making it buffer forever.",
    "Closing resources on every path, including errors and cancellation, prevents slow leaks.",
    "Loopback connections are fast, so most of the cost you measure there is your own code.",
    "A timeout is a promise about how long you are willing to wait, not a guess about the network.",
    "Stalls are harder to spot than errors, because the connection still looks healthy.",
    "Reading bytes and splitting lines yourself avoids surprises with unusual line separators.",
    "The same messages always produce the same reply here, which makes tests easy to write.",
    "This demo model runs locally, so it needs no API key and no network access.",
    "Latency is the wait for the first word, while throughput is how quickly the rest follow.",
    "A proxy that buffers responses can turn a smooth stream into one large delayed block.",
    "Structured logs with request ids make a failed stream much easier to trace afterwards.",
    "Idempotent requests can be repeated safely, which makes retrying them simple.",
    "A stream that ends without its final marker should be treated as cut, not as complete.",
    "Browsers reconnect an EventSource on their own and send the last event id they received.",
    "Small, well named modules are easier to test than one large file that does everything.",
    "Measuring before optimizing keeps attention on the parts of a system that really cost time.",
    "Good error messages say what went wrong and what to try next.",
    "A cancelled request should stop the work behind it, so no one pays for words nobody reads.",
    "Keeping a short replay buffer on the server costs a little memory and saves whole replies.",
    "Clients on slow links receive the same events, only spread over a longer time.",
    "Deterministic output is useful for demos, because everyone sees the same thing.",
    "Each reply ends with a done event that says why the model stopped.",
    "Usage totals add up across turns, so a long conversation shows its full cost.",
    "When the server is overloaded, a clear retryable error is better than a silent hang.",
)

#: First words of openings that acknowledge the user's message; ``{}`` is a quoted snippet.
OPENINGS: Final[tuple[str, ...]] = (
    "You wrote {}.",
    "Thanks for your message, {}.",
    "I read your words, {}.",
    "Here is a reply to {}.",
)
QUESTION_OPENINGS: Final[tuple[str, ...]] = (
    "You asked {}.",
    "Good question: {}.",
)
CLOSINGS: Final[tuple[str, ...]] = (
    "That is what I can say about {} for now.",
    "I hope this helps with {}.",
    "Ask me more about {} whenever you like.",
)
