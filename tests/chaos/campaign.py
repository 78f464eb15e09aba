"""The chaos campaign: seeded turns through a fault-injecting proxy, checked token by token.

Two targets, each behind its own FaultProxy per lane:

- "native": `create_app` (the `ChaosModel` backend) on a real uvicorn. Events carry ids, so a
  dropped stream resumes: every reply must equal the fault-free reply and no `token` event may
  repeat, whatever the faults.
- "openai": an OpenAI-format LoopbackServer upstream, without ids. A dropped reply restarts:
  the final reply must be exact, and every restart must be announced by a `retry` event with
  ``resume=False`` before the repeated tokens.
- "responses": an OpenAI Responses API LoopbackServer upstream whose background streams carry
  sequence numbers. A dropped reply resumes with ``GET …/responses/<id>?starting_after=<n>``:
  as for native, every reply must be exact and no `token` event may repeat.

A lane is one sequence of conversations with its own proxy and its own seeded RNG, so each turn
gets the same faults on every run (where a byte offset falls among the events can still vary
with how the server happened to chunk its writes; the checks hold for any such outcome). Each
attempt opens a new connection (no keep-alive), and the lane's proxy hands the turn's planned
faults to its connections in order. Lanes run concurrently so that the short, bounded stalls of
different lanes overlap.

The expected reply is computed, not recorded: `ChaosModel` is a function of the conversation.

About one turn in four is a tool turn: the conversations declare a tool (`chaos_lookup`), the
prompt names it, and one send makes two model calls (the tool call, then the reply to its
result). Its faults all land in step 2: step 1 must never be requested again, the tool must run
exactly once, and step 2's reply is checked token by token like any other.

Another target, "replica" (`run_campaign(targets=("replica",))`), runs the native checks
against three replica processes on a real redis-server behind a round-robin proxy (so nearly
every resume lands on another replica), while a killer SIGKILLs a random replica every second
or so and restarts it: every reply must still be exact, each drop resumed (the survivors take
the dead producer's streams over and continue them), none restarted.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import random
import time
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from difflib import SequenceMatcher
from typing import Any

import httpx

from aistream import AIStream, AIStreamError, Message, RetryConfig, RetryEvent, Tool, Usage
from aistream._history import wire_messages, wire_tools
from aistream._proxy import FaultProxy, Faults
from aistream._wire._dialect import ChatMessage, ChatRequest, ToolCallPart
from aistream.server import ReplayStore, create_app
from tests.chaos.model import ChaosModel, HTTPFault, ResponsesUpstream, Upstream
from tests.loopback import LoopbackServer
from tests.redisserver import RedisServer
from tests.replicas.harness import Replica, RoundRobin
from tests.servers import running

#: The credential every client sends; it must never show up anywhere (see SecretSweep).
API_KEY = "sk-chaos-4c1f9e7a2b8d6035e1a7c9f4b2d8e6a0"
SEED = int(os.environ.get("AISTREAM_CHAOS_SEED", "20240917"))
#: Turns per target (native, openai and responses each). CI: 500; `make chaos`: 10,000.
TURNS = int(os.environ.get("AISTREAM_CHAOS_TURNS", "500"))
LANES = int(os.environ.get("AISTREAM_CHAOS_LANES", "8"))  # per target
CONVERSATION_TURNS = 3  # turns per AIStream before a fresh conversation
SYSTEM_PROMPT = "Answer in a few sentences; keep every byte exactly as it is."
TOOL_NAME = "chaos_lookup"
TOOL_SHARE = 0.25  # of the turns

# Client timers and proxy faults: the faults outlast the timers, and all are short.
CLIENT_TIMEOUT = 0.5  # connect and silence on the connection
STALL_TIMEOUT = 0.2  # between content events
STALL_SECONDS = 0.6  # how long a "stall" holds the response (> both timers)
LONG_DELAY = 0.7  # a first-byte delay the client gives up on (> CLIENT_TIMEOUT)
SHORT_DELAY = 0.02  # a first-byte delay the client waits out
RETRY = RetryConfig(max_retries=8, initial_delay=0.002, max_delay=0.02, jitter=False)
TURN_GUARD = 30.0  # seconds: a turn that takes longer fails the campaign instead of hanging
#: One-line summaries of the campaigns run in this session, for pytest's terminal summary.
SUMMARY: list[str] = []

PROXY_KINDS = {"cut": 3, "reset": 3, "stall": 2, "drip": 1, "delay": 1}
#: Targets whose drops resume (the rest restart).
RESUMABLE = frozenset({"native", "responses", "replica"})
HTTP_KINDS = {"status": 1, "stream-error": 1}  # the OpenAI upstream only
#: Response bytes a fault offset is drawn within: small enough that the native reply (40+
#: tokens) is longer than the offsets of all the faults of a turn together.
SPAN = {"native": 3000, "openai": 5500, "responses": 6000, "replica": 3000}
#: The replica target: a paced model (so kills land mid-reply), a short producer lease, and
#: more retries (a takeover outlasts the client's stall timeout a few times before it resumes).
REPLICA_OPTIONS = {
    "chaos_delay": 0.002,
    "producer_lease": 0.5,
    "heartbeat_interval": 0.1,
    "resume_grace": 10.0,
}
REPLICA_RETRY = RetryConfig(max_retries=24, initial_delay=0.002, max_delay=0.02, jitter=False)
KILL_EVERY = (0.5, 1.5)  # seconds between producer kills, drawn uniformly

WORDS = (
    "why",
    "do",
    "streams",
    "drop",
    "resume",
    "tokens",
    "proxy",
    "network",
    "lost",
    "twice",
    "héllo",
    "日本",
    "😀",
    "line\nbreak",
    "carriage\rreturn",
    "tab\there",
    '"quotes"',
    "back\\slash",
    "data:",
    "id:",
)


# --- the fault plan --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PlannedFault:
    """One fault for one connection: proxy faults, or an HTTP fault served by the upstream."""

    kind: str
    faults: Faults = field(default_factory=Faults)
    http: HTTPFault | None = None

    def describe(self) -> str:
        f = self.faults
        parts = [self.kind]
        if f.cut_after is not None:
            parts.append(f"cut@{f.cut_after}")
        if f.reset_after is not None:
            parts.append(f"reset@{f.reset_after}")
        if f.stall is not None:
            parts.append(f"stall@{f.stall[0]}x{f.stall[1]}s")
        if f.delay:
            parts.append(f"delay {f.delay}s")
        if self.http is not None and self.http.kind == "stream-error":
            parts.append(f"after {self.http.after_tokens} tokens")
        return " ".join(parts)


def plan_turn(rng: random.Random, target: str) -> list[PlannedFault]:
    """One to three faults for one turn, drawn from `rng` alone.

    Every fault but the last breaks its connection (a drip is cut part-way, a delay outlasts
    the client's timeout), so each one gets a connection of its own.
    """
    kinds = dict(PROXY_KINDS)
    if target == "openai":
        kinds.update(HTTP_KINDS)
    names, weights = list(kinds), list(kinds.values())
    count = rng.randint(1, 3)
    # Native resumes: the offsets of a turn share one reply. OpenAI restarts: each has it all.
    span = SPAN[target] // count if target in RESUMABLE else SPAN[target]
    plan: list[PlannedFault] = []
    for k in range(count):
        kind = rng.choices(names, weights)[0]
        last = k == count - 1
        at = rng.randrange(span)
        if kind == "cut":
            plan.append(PlannedFault(kind, Faults(cut_after=at)))
        elif kind == "reset":
            plan.append(PlannedFault(kind, Faults(reset_after=at)))
        elif kind == "stall":
            plan.append(PlannedFault(kind, Faults(stall=(at, STALL_SECONDS))))
        elif kind == "drip":
            to_the_end = last and rng.random() < 0.5
            plan.append(PlannedFault(kind, Faults(drip=True, cut_after=None if to_the_end else at)))
        elif kind == "delay":
            delay = SHORT_DELAY if last and rng.random() < 0.5 else LONG_DELAY
            plan.append(PlannedFault(kind, Faults(delay=delay)))
        elif kind == "status":
            plan.append(PlannedFault(kind, http=HTTPFault("status")))
        else:
            plan.append(PlannedFault(kind, http=HTTPFault("stream-error", rng.randrange(40))))
    return plan


def prompt_for(rng: random.Random) -> str:
    words = rng.choices(WORDS, k=rng.randint(1, 12))
    return " ".join(words) + rng.choice(("?", ".", "", "!"))


# --- checking one turn ------------------------------------------------------------------------


def diff_counts(got: list[str], want: list[str], *, prefix: bool = False) -> tuple[int, int]:
    """(lost, duplicated) tokens of `got` against `want`; with `prefix`, a missing tail is fine."""
    if got == want or (prefix and got == want[: len(got)]):
        return 0, 0
    lost = duplicated = 0
    for tag, i1, i2, j1, j2 in SequenceMatcher(None, got, want, autojunk=False).get_opcodes():
        if tag == "insert":
            if not (prefix and i1 == len(got)):
                lost += j2 - j1
        elif tag == "delete":
            duplicated += i2 - i1
        elif tag == "replace":
            lost += j2 - j1
            duplicated += i2 - i1
    return lost, duplicated


@dataclass
class TurnCheck:
    """What one turn's `token` and `retry` events say, against the expected tokens."""

    lost: int = 0
    duplicated: int = 0
    retries: int = 0
    resumes: int = 0
    restarts: int = 0
    restarts_after_tokens: int = 0
    announced_repeats: int = 0  # tokens streamed again after a resume=False announcement
    tokens: int = 0


def check_events(log: list[tuple[str, Any]], expected: list[str], *, resumable: bool) -> TurnCheck:
    """Split the event log at each ``resume=False`` retry and compare the pieces.

    Resumable (native): every token event counts, so the whole sequence must equal `expected`.
    Id-less: the part after the last restart must equal `expected`, and each earlier part must
    be a prefix of it (what a restart discards was right, and was announced before repeating).
    """
    check = TurnCheck()
    segments: list[list[str]] = [[]]
    for kind, value in log:
        if kind == "start":
            continue  # a model call begins (a tool turn makes two)
        if kind == "token":
            segments[-1].append(value)
            check.tokens += 1
            continue
        event: RetryEvent = value
        check.retries += 1
        if event.resume:
            check.resumes += 1
        else:
            check.restarts += 1
            if segments[-1]:
                check.restarts_after_tokens += 1
            segments.append([])
    if resumable:
        flat = [token for segment in segments for token in segment]
        check.lost, check.duplicated = diff_counts(flat, expected)
        return check
    for segment in segments[:-1]:
        lost, duplicated = diff_counts(segment, expected, prefix=True)
        check.lost += lost
        check.duplicated += duplicated
        check.announced_repeats += len(segment)
    lost, duplicated = diff_counts(segments[-1], expected)
    check.lost += lost
    check.duplicated += duplicated
    return check


# --- secrets ------------------------------------------------------------------------------------


class SecretSweep:
    """Looks for the API key (whole, or any 10 characters of its random part) in text.

    Fed every exception (its chain, args and body), every repr and every log record that the
    campaign produces; counts what it checked and the leaks it found, by category, and keeps
    the first few leaks of each category as examples.
    """

    def __init__(self, secret: str) -> None:
        core = secret.rsplit("-", 1)[-1]
        self.needles = {secret, *(core[i : i + 10] for i in range(len(core) - 9))}
        self.checked: Counter[str] = Counter()
        self.leaked: Counter[str] = Counter()
        self.examples: dict[str, list[str]] = {}
        self.exception_types: Counter[str] = Counter()
        self.log_levels: Counter[str] = Counter()

    @property
    def leaks(self) -> list[str]:
        """Examples of leaks, every category."""
        return [example for examples in self.examples.values() for example in examples]

    def text(self, category: str, text: str) -> None:
        self.checked[category] += 1
        for needle in self.needles:
            if needle in text:
                self.leaked[category] += 1
                examples = self.examples.setdefault(category, [])
                if len(examples) < 5:
                    examples.append(f"{category}: {text[:300]!r}")
                return

    def exception(self, exc: BaseException) -> None:
        seen: set[int] = set()
        current: BaseException | None = exc
        while current is not None and id(current) not in seen:
            seen.add(id(current))
            name = f"{type(current).__module__}.{type(current).__qualname__}"
            self.exception_types[name] += 1
            self.text("exception", str(current))
            self.text("exception", repr(current))
            for arg in current.args:
                self.text("exception", repr(arg))
            body = getattr(current, "body", None)
            if body is not None:
                self.text("exception-body", repr(body))
            current = current.__cause__ or current.__context__

    def handler(self) -> logging.Handler:
        sweep = self

        class _Handler(logging.Handler):
            def emit(self, record: logging.LogRecord) -> None:
                sweep.log_levels[f"{record.name}:{record.levelname}"] += 1
                sweep.text("log", self.format(record))
                sweep.text("log", repr(record.args))
                if record.exc_info and record.exc_info[1] is not None:
                    sweep.exception(record.exc_info[1])

        handler = _Handler(logging.DEBUG)
        handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
        return handler


#: The loggers the campaign's code writes to; swept at DEBUG.
SWEPT_LOGGERS = ("aistream", "httpx", "httpcore", "h11", "anyio", "uvicorn", "asyncio")


@contextlib.contextmanager
def sweeping_logs(sweep: SecretSweep) -> Iterator[None]:
    """Every record of `SWEPT_LOGGERS` at DEBUG into `sweep` (as ``caplog.set_level(DEBUG)``).

    Those loggers stop propagating meanwhile, so pytest's own capture does not keep a copy of
    every DEBUG line of a 10,000-turn run; the root logger (WARNING) is swept too.
    """
    handler = sweep.handler()
    saved: list[tuple[logging.Logger, int, bool]] = []
    for name in SWEPT_LOGGERS:
        logger = logging.getLogger(name)
        saved.append((logger, logger.level, logger.propagate))
        logger.setLevel(logging.DEBUG)
        logger.propagate = False
        logger.addHandler(handler)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
        for logger, level, propagate in saved:
            logger.removeHandler(handler)
            logger.setLevel(level)
            logger.propagate = propagate


# --- figures ----------------------------------------------------------------------------------


@dataclass
class Figures:
    """The campaign's counts for one target."""

    target: str
    turns: int = 0
    conversations: int = 0
    connections: int = 0
    planned: Counter[str] = field(default_factory=Counter)
    injected: Counter[str] = field(default_factory=Counter)  # faults that took effect
    turns_without_fault: int = 0
    retries: int = 0
    resumes: int = 0
    restarts: int = 0
    restarts_after_tokens: int = 0
    announced_repeats: int = 0
    tokens: int = 0
    lost: int = 0
    duplicated: int = 0
    tool_turns: int = 0
    tool_turns_with_fault: int = 0  # in step 2, the only step that gets faults
    kills: int = 0  # replicas SIGKILLed mid-campaign (the replica target)
    replica_output: list[str] = field(default_factory=list)  # what they logged (the last lines)
    failures: list[str] = field(default_factory=list)

    def add(self, check: TurnCheck) -> None:
        self.retries += check.retries
        self.resumes += check.resumes
        self.restarts += check.restarts
        self.restarts_after_tokens += check.restarts_after_tokens
        self.announced_repeats += check.announced_repeats
        self.tokens += check.tokens
        self.lost += check.lost
        self.duplicated += check.duplicated

    def row(self) -> str:
        kinds = " ".join(f"{k}={self.injected[k]}/{n}" for k, n in sorted(self.planned.items()))
        return (
            f"{self.target:>6}: {self.turns} turns ({self.turns_without_fault} without a fault "
            f"taking effect), {sum(self.injected.values())} faults injected "
            f"of {sum(self.planned.values())} planned ({kinds}), {self.connections} connections, "
            f"retries={self.retries} resumes={self.resumes} restarts={self.restarts} "
            f"(after tokens: {self.restarts_after_tokens}, tokens re-streamed after an "
            f"announcement: {self.announced_repeats}), tokens={self.tokens}, "
            f"lost={self.lost} duplicated={self.duplicated} tool turns={self.tool_turns} "
            f"(with a fault in step 2: {self.tool_turns_with_fault}) "
            f"failures={len(self.failures)}"
            + (f", producers killed={self.kills}" if self.kills else "")
        )


@dataclass
class CampaignResult:
    seed: int
    turns_per_target: int
    lanes: int
    elapsed: float
    figures: dict[str, Figures]
    sweep: SecretSweep
    authorization_seen: int

    def total(self, name: str) -> int:
        return sum(int(getattr(f, name)) for f in self.figures.values())

    def summary(self) -> str:
        """The one-line summary."""
        injected = sum(sum(f.injected.values()) for f in self.figures.values())
        turns = self.total("turns")
        return (
            f"chaos: {turns} turns (seed {self.seed}), {injected} faults injected, "
            f"retries={self.total('retries')} resumes={self.total('resumes')} "
            f"restarts={self.total('restarts')} lost={self.total('lost')} "
            f"duplicated={self.total('duplicated')} in {self.elapsed:.1f} s"
        )

    def report(self) -> str:
        """The full figures, one line per target, then the summary."""
        lines = [f"chaos campaign: seed={self.seed}, {self.lanes} lanes per target"]
        lines += [f.row() for f in self.figures.values()]
        checked = ", ".join(f"{k}={v}" for k, v in sorted(self.sweep.checked.items()))
        leaked = ", ".join(f"{k}={v}" for k, v in sorted(self.sweep.leaked.items())) or "none"
        lines.append(
            f"secrets: checked {checked}; {len(self.sweep.exception_types)} exception types; "
            f"leaks: {leaked}"
        )
        lines.append(self.summary())
        return "\n".join(lines)


# --- lanes --------------------------------------------------------------------------------------


class ProxyClock:
    """The proxy's sleep: counts the stalls and first-byte delays it starts, then really sleeps."""

    def __init__(self) -> None:
        self.started: Counter[float] = Counter()

    async def sleep(self, seconds: float) -> None:
        if seconds:
            self.started[seconds] += 1
        await asyncio.sleep(seconds)


class Lane:
    """One sequence of conversations through its own proxy, with its own RNG."""

    def __init__(
        self, target: str, number: int, endpoint: str, port: int, upstream: Upstream | None
    ) -> None:
        self.target = target
        self.name = f"{target}-{number}"
        self.rng = random.Random(f"{SEED}:{self.name}")
        self.endpoint_path = endpoint
        self.upstream = upstream
        self.pending: deque[PlannedFault | None] = deque()  # None: a clean connection
        self.assigned: dict[int, PlannedFault] = {}
        self.clock = ProxyClock()
        self.proxy = FaultProxy("127.0.0.1", port, plan=self.plan, sleep=self.clock.sleep)
        self.log: list[tuple[str, Any]] = []
        self.faulty = True  # False: a control run, every connection clean
        self.tool_runs = 0  # calls of the lane's tool in the current turn

    def chaos_lookup(self, word: str) -> str:
        """Look a word up (the campaign's tool: counts its runs)."""
        self.tool_runs += 1
        return lookup_result(word)

    def plan(self, index: int) -> Faults:
        """FaultProxy's plan: the next planned fault of the current turn, then none."""
        if not self.pending:
            return Faults()
        fault = self.pending.popleft()
        if fault is None:
            return Faults()
        self.assigned[index] = fault
        if fault.http is not None:
            assert self.upstream is not None
            self.upstream.arm(self.name, fault.http)
            return Faults()
        return fault.faults

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.proxy.port}{self.endpoint_path}"


def took_effect(lane: Lane, index: int, fault: PlannedFault, sleeps: Counter[float]) -> bool:
    """Whether `fault`, assigned to connection `index`, actually happened."""
    stats = lane.proxy.connections[index]
    if fault.kind in ("cut", "reset"):
        return stats.fault == fault.kind
    if fault.kind == "drip":
        # Dripping may end early: the client's stall_timeout can give up on a slow link first.
        return stats.bytes_down > 0
    if fault.kind in ("stall", "delay"):
        seconds = fault.faults.stall[1] if fault.faults.stall else fault.faults.delay
        if sleeps[seconds] > 0:
            sleeps[seconds] -= 1
            return True
        return False
    assert lane.upstream is not None
    served = lane.upstream.served.get(lane.name, [])
    if fault.kind in served:
        served.remove(fault.kind)
        return True
    return False


def lookup_result(word: str) -> str:
    return f"{word!r} means something"


def conversation_request(chat: AIStream, *extra: ChatMessage) -> ChatRequest:
    """The request the model sees next: the history, then `extra`."""
    tools = wire_tools([Tool.from_function(chaos_lookup_schema, name=TOOL_NAME)])
    history = wire_messages(chat.messages)
    return ChatRequest((*history, *extra), system_prompt=SYSTEM_PROMPT, tools=tools)


def chaos_lookup_schema(word: str) -> str:
    """Look a word up."""
    return word


def expected_for(
    chat: AIStream, prompt: str, model: ChaosModel
) -> tuple[list[str], Usage, Usage | None, list[str]]:
    """The reply's tokens and usage; for a tool turn also step 1's usage and the call ids."""

    def usage_of(request: ChatRequest) -> Usage:
        prompt_tokens, completion = model.usage(request)
        return Usage(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion,
            total_tokens=prompt_tokens + completion,
        )

    first = conversation_request(chat, ChatMessage("user", prompt))
    calls = model.tool_calls(first)
    if not calls:
        return model.tokens(first), usage_of(first), None, []
    parts = tuple(ToolCallPart(c.id, c.name, c.arguments) for c in calls)
    results = [
        ChatMessage(
            "tool",
            lookup_result(json.loads(c.arguments)["word"]),
            tool_call_id=c.id,
            name=c.name,
        )
        for c in calls
    ]
    second = dataclasses.replace(
        first,
        messages=(*first.messages, ChatMessage("assistant", "", tool_calls=parts), *results),
    )
    return model.tokens(second), usage_of(second), usage_of(first), [c.id for c in calls]


async def run_turn(
    lane: Lane,
    chat: AIStream,
    model: ChaosModel,
    figures: Figures,
    sweep: SecretSweep,
    turn_number: int,
) -> Usage | None:
    """One turn: arm its faults, send, then check the reply and the events exactly."""
    prompt = prompt_for(lane.rng)
    tool_turn = lane.target in ("native", "openai") and lane.rng.random() < TOOL_SHARE
    if tool_turn:  # unique per lane and turn, so each tool call id is used once in the run
        prompt = f"{prompt} then {TOOL_NAME} it (lane {lane.name} turn {turn_number})"
    plan = plan_turn(lane.rng, lane.target) if lane.faulty else []
    expected, usage, step_one, call_ids = expected_for(chat, prompt, model)
    before = len(chat.messages)
    lane.log = []
    lane.tool_runs = 0
    lane.pending = deque([None, *plan] if call_ids else plan)  # step 1 clean: faults in step 2
    first = len(lane.proxy.connections)
    sleeps_before = Counter(lane.clock.started)
    described = ", ".join(p.describe() for p in plan)
    where = f"seed={SEED} lane={lane.name} turn={turn_number} plan=[{described}]"
    reply: Message | None = None
    try:
        async with asyncio.timeout(TURN_GUARD):
            reply = await chat.send(prompt)
    except AIStreamError as exc:
        sweep.exception(exc)
        figures.failures.append(f"{where}: send() raised {type(exc).__name__}: {exc}")
    except TimeoutError:
        figures.failures.append(f"{where}: no reply within {TURN_GUARD} s")
    lane.pending.clear()
    figures.turns += 1
    for p in plan:
        figures.planned[p.kind] += 1

    sleeps = lane.clock.started - sleeps_before
    fired = 0
    for index in range(first, len(lane.proxy.connections)):
        figures.connections += 1
        fault = lane.assigned.pop(index, None)
        if fault is not None and took_effect(lane, index, fault, sleeps):
            figures.injected[fault.kind] += 1
            fired += 1
    if not fired:
        figures.turns_without_fault += 1

    for kind, value in lane.log:
        if kind == "retry" and value is not None:
            sweep.exception(value.error)
            sweep.text("repr", repr(value))
    check = check_events(lane.log, expected, resumable=lane.target in RESUMABLE)
    figures.add(check)
    problems: list[str] = []
    if check.lost or check.duplicated:
        problems.append(f"lost={check.lost} duplicated={check.duplicated}")
    if lane.target in RESUMABLE and check.restarts_after_tokens:
        problems.append(f"{check.restarts_after_tokens} restarts after tokens (no resume)")
    if lane.target == "openai" and check.resumes:
        problems.append(f"{check.resumes} retries claimed resume=True on a stream without ids")
    if reply is not None:
        sweep.text("repr", repr(reply))
        sweep.text("repr", repr(chat))
        sweep.text("repr", reply.model_dump_json())
        if reply.content != "".join(expected):
            problems.append(f"reply differs: {reply.content[:80]!r}")
        if reply.finish_reason != "stop":
            problems.append(f"finish_reason={reply.finish_reason!r}")
        if reply.usage != usage:
            problems.append(f"usage {reply.usage!r} != {usage!r}")
        if chat.messages[-1].content != reply.content:
            problems.append("history does not end with the reply")
    if tool_turn != bool(call_ids):
        problems.append(f"the prompt {'named' if tool_turn else 'did not name'} the tool")
    if call_ids:
        figures.tool_turns += 1
        figures.tool_turns_with_fault += bool(fired)
        if lane.tool_runs != len(call_ids):
            problems.append(f"the tool ran {lane.tool_runs} times for {len(call_ids)} calls")
        # Step 1 streams again only when it failed itself (a stall under load, say): never
        # once it completed. Its retries are those before step 2's streaming-start.
        starts = [i for i, (kind, _) in enumerate(lane.log) if kind == "start"]
        end_of_one = starts[1] if len(starts) > 1 else len(lane.log)
        step_one_retries = sum(1 for kind, _ in lane.log[:end_of_one] if kind == "retry")
        again = [c for c in call_ids if not 1 <= model.tool_steps[c] <= 1 + step_one_retries]
        if again:
            problems.append(
                f"step 1 was generated {model.tool_steps[again[0]]} times "
                f"({step_one_retries} retries in step 1)"
            )
        roles = [m.role for m in chat.messages[before:]]
        if reply is not None and roles != ["user", "assistant", "tool", "assistant"]:
            problems.append(f"history after the turn: {roles}")
    if problems:
        errors = [str(v.error)[:120] for k, v in lane.log if k == "retry"]
        problems.append(f"{len(errors)} retries, the last ones after: {errors[-3:]}")
        figures.failures.append(f"{where}: {'; '.join(problems)}")
    if reply is None:
        return None
    return usage + step_one if step_one is not None else usage


async def run_lane(
    lane: Lane, turns: int, model: ChaosModel, figures: Figures, sweep: SecretSweep
) -> None:
    headers = {"Authorization": f"Bearer {API_KEY}", "X-Chaos-Lane": lane.name}
    limits = httpx.Limits(max_keepalive_connections=0)  # one connection per attempt
    async with httpx.AsyncClient(limits=limits, trust_env=False) as client:
        done = 0
        while done < turns:
            chat = AIStream(
                lane.url,
                protocol="native" if lane.target == "replica" else lane.target,  # type: ignore[arg-type]
                headers=headers,
                options={"background": True} if lane.target == "responses" else None,
                system_prompt=SYSTEM_PROMPT,
                retry=REPLICA_RETRY if lane.target == "replica" else RETRY,
                timeout=CLIENT_TIMEOUT,
                stall_timeout=STALL_TIMEOUT,
                client=client,
                tools=[Tool.from_function(lane.chaos_lookup, name=TOOL_NAME)],
            )
            chat.on("token", lambda token: lane.log.append(("token", token)))
            chat.on("retry", lambda event: lane.log.append(("retry", event)))
            chat.on("streaming-start", lambda: lane.log.append(("start", None)))
            figures.conversations += 1
            total = Usage()
            complete = True
            async with chat:
                for _ in range(min(CONVERSATION_TURNS, turns - done)):
                    done += 1
                    usage = await run_turn(lane, chat, model, figures, sweep, done)
                    if usage is None:
                        complete = False
                        break
                    total = total + usage
            if complete and chat.usage != total:
                figures.failures.append(
                    f"seed={SEED} lane={lane.name}: conversation usage {chat.usage!r} != {total!r}"
                )
            sweep.text("repr", repr(chat))


async def start_replicas(stack: contextlib.AsyncExitStack) -> tuple[list[Replica], RoundRobin]:
    """Three replica processes on a redis-server of their own, behind a RoundRobin."""
    redis = RedisServer()
    redis.start()
    stack.callback(redis.close)
    replicas = [Replica(store=redis.url, **REPLICA_OPTIONS) for _ in range(3)]
    await asyncio.gather(*(asyncio.to_thread(r.start) for r in replicas))

    async def stop_all() -> None:
        await asyncio.gather(*(asyncio.to_thread(r.stop) for r in replicas))

    stack.push_async_callback(stop_all)
    balancer = await stack.enter_async_context(
        RoundRobin(lambda: [r.port for r in replicas if r.alive])
    )
    return replicas, balancer


async def kill_replicas(replicas: list[Replica], figures: Figures, done: asyncio.Event) -> None:
    """SIGKILL a random replica every KILL_EVERY seconds (seeded), restart it, until `done`."""
    rng = random.Random(f"{SEED}:kills")
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), rng.uniform(*KILL_EVERY))  # the schedule
            for replica in replicas:
                figures.replica_output += replica.output[-20:]
            return
        victim = rng.choice(replicas)
        figures.replica_output += victim.output[-20:]
        victim.kill()
        figures.kills += 1
        await asyncio.to_thread(victim.start)


def lane_turns(turns: int, lanes: int) -> list[int]:
    return [turns // lanes + (1 if i < turns % lanes else 0) for i in range(lanes)]


async def run_campaign(
    turns: int = TURNS,
    lanes: int = LANES,
    *,
    targets: tuple[str, ...] = ("native", "openai", "responses"),
    replay_store: ReplayStore | None = None,
    faults: bool = True,
) -> CampaignResult:
    """Run `turns` turns against each target through `lanes` proxies each; return the figures.

    `replay_store` replaces the native server's store; ``faults=False`` is the control run.
    """
    model = ChaosModel()
    upstream = Upstream(model)
    sweep = SecretSweep(API_KEY)
    figures = {target: Figures(target) for target in targets}
    started = time.perf_counter()
    async with contextlib.AsyncExitStack() as stack:
        app = create_app(backend=model, replay_store=replay_store)
        native_url = await stack.enter_async_context(running(app))
        replicas: list[Replica] = []
        balancer_port = 0
        if "replica" in targets:
            replicas, balancer = await start_replicas(stack)
            balancer_port = balancer.port
        loopback = await stack.enter_async_context(LoopbackServer(upstream.handler()))
        upstream.server = loopback
        responses = ResponsesUpstream(model)
        responses_server = await stack.enter_async_context(LoopbackServer(responses.handler()))
        responses.server = responses_server
        stack.enter_context(sweeping_logs(sweep))
        ports = {
            "native": (int(native_url.rsplit(":", 1)[1]), "/api/chat", None),
            "openai": (int(loopback.url.rsplit(":", 1)[1]), "/v1/chat/completions", upstream),
            "responses": (int(responses_server.url.rsplit(":", 1)[1]), "/v1/responses", None),
            "replica": (balancer_port, "/api/chat", None),
        }
        all_lanes: list[tuple[Lane, int]] = []
        for target in targets:
            port, path, up = ports[target]
            for number, count in enumerate(lane_turns(turns, lanes)):
                lane = Lane(target, number, path, port, up)
                lane.faulty = faults
                await stack.enter_async_context(lane.proxy)
                all_lanes.append((lane, count))
        done = asyncio.Event()
        async with asyncio.TaskGroup() as group:
            if replicas:
                group.create_task(kill_replicas(replicas, figures["replica"], done))
            lanes_done = [
                group.create_task(run_lane(lane, count, model, figures[lane.target], sweep))
                for lane, count in all_lanes
            ]
            await asyncio.wait(lanes_done)
            done.set()
        for lane, _ in all_lanes:
            sweep.text("repr", repr(lane.proxy))
    return CampaignResult(
        seed=SEED,
        turns_per_target=turns,
        lanes=lanes,
        elapsed=time.perf_counter() - started,
        figures=figures,
        sweep=sweep,
        authorization_seen=upstream.authorization_seen + responses.authorization_seen,
    )
