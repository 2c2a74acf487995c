"""`bench --profile DIR`: sample each service with py-spy during the flat-out phase, and say by part
where the CPU goes (HTTP framework, validation, SQL, JSON, logging, metrics, Kafka client, ...).

py-spy (a dev dependency) attaches to a running process by pid; it needs ptrace rights (root, or
`kernel.yama.ptrace_scope=0`). `--nonblocking` samples without pausing the service, so the profile
does not slow what it measures. Raw output is the "collapsed stacks" format: one line per distinct
stack, root first, frames separated by `;`, then the sample count.

The summary puts every sample into two boxes:
- *where*: what the process was doing at the root (an HTTP request, a consumed batch, the outbox
  relay, other), found from the outermost frame that names one;
- *what*: the library the innermost recognisable frame belongs to (the leaf first: time in pydantic
  called from SQLAlchemy's result processing is validation only if pydantic is the leaf's library);
  asyncio's own frames (a socket write, a callback) are charged to the library that called them, so
  a query's `send()` counts as SQL, a produce request's as Kafka client.

On a machine shared with other work, `--nonblocking` samples a thread that is runnable but not on
a core as if it ran: read the shares as "where the process spends its turns", next to the CPU
seconds the bench measures from /proc.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

# (part, pattern on the frame's file path), tried leaf first; the first that matches names the part.
WHAT: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (part, re.compile(pattern))
    for part, pattern in (
        ("logging", r"(^|/)(structlog|logging)/"),
        ("metrics", r"(^|/)prometheus_client/"),
        ("JSON", r"(^|/)(json|orjson)/"),
        ("validation (pydantic)", r"(^|/)pydantic(_core)?/"),
        ("SQL (SQLAlchemy)", r"(^|/)sqlalchemy/"),
        ("SQL (asyncpg driver)", r"(^|/)asyncpg/"),
        ("Kafka client (aiokafka, FastStream)", r"(^|/)(aiokafka|faststream|kafka)/"),
        ("HTTP server (uvicorn, h11)", r"(^|/)(uvicorn|h11|httptools)/"),
        ("HTTP framework (FastAPI, Starlette)", r"(^|/)(fastapi|starlette|anyio)/"),
        ("auth (JWT)", r"(^|/)(jwt|cryptography)/|socialrx_shared/auth\.py"),
        ("retries (tenacity)", r"(^|/)tenacity/"),
        ("greenlet switch (SQLAlchemy async)", r"(^|/)greenlet/"),
        ("asyncio event loop", r"(^|/)(asyncio|uvloop)/|^selectors\.py"),
        ("service code", r"socialrx_"),
    )
)
WHERE: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (part, re.compile(pattern))
    for part, pattern in (
        ("outbox relay", r"socialrx_shared/outbox\.py"),
        ("consumer", r"socialrx_shared/consumer\.py|(^|/)faststream/"),
        ("HTTP request", r"(^|/)(uvicorn/protocols|starlette|fastapi)/"),
    )
)
# Leaf frames of a thread that waits (not on the CPU): py-spy --nonblocking cannot always tell idle.
IDLE = re.compile(
    r"^(EpollSelector\.select|Condition\.wait|Queue\.get|Event\.wait|_wait_for_tstate_lock|"
    r"Thread\.join|select) \("
)
FRAME = re.compile(r"^(?P<fn>.*?) \((?P<file>[^:()]+)(?::\d+)?\)$")


def py_spy() -> str | None:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    return found if Path(found).exists() else None


class Profiler:
    """py-spy record on each pid, from start() to stop(), raw collapsed stacks into `folder`."""

    def __init__(self, folder: Path, pids: dict[str, int], rate_hz: int = 97) -> None:
        self.folder = folder
        self.pids = pids
        self.rate_hz = rate_hz
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self) -> None:
        exe = py_spy()
        if exe is None:
            raise RuntimeError("py-spy not installed (it is in the dev dependency group: make install)")
        self.folder.mkdir(parents=True, exist_ok=True)
        for name, pid in self.pids.items():
            self.procs[name] = subprocess.Popen(
                [
                    exe,
                    "record",
                    "--pid",
                    str(pid),
                    "--rate",
                    str(self.rate_hz),
                    "--nonblocking",
                    "--format",
                    "raw",
                    "--output",
                    str(self.folder / f"{name}.txt"),
                ],
                stdout=subprocess.DEVNULL,
                stderr=open(self.folder / f"{name}.py-spy.log", "wb"),  # noqa: SIM115 - the child keeps it
            )

    def stop(self) -> dict[str, dict]:
        for proc in self.procs.values():
            proc.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        for proc in self.procs.values():
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
        return {name: summarise(self.folder / f"{name}.txt") for name in self.procs}


def _file(frame: str) -> str:
    match = FRAME.match(frame.strip())
    return match.group("file") if match else frame


def classify(frames: list[str]) -> tuple[str, str]:
    """(where, what) of one stack, frames root first."""
    files = [_file(f) for f in frames]
    where = next((part for part, pattern in WHERE for f in files if pattern.search(f)), "other")
    loop_only = False
    for f in reversed(files):
        for part, pattern in WHAT:
            if pattern.search(f):
                if part == "asyncio event loop":
                    # A socket write or a callback: charged to the library that asked for it.
                    loop_only = True
                    break
                return where, part
    return where, "asyncio event loop" if loop_only else "other (interpreter, standard library)"


def summarise(path: Path) -> dict:
    """Shares (% of samples) by part, by where, and by (where, part), from a raw py-spy file."""
    what: Counter[str] = Counter()
    where: Counter[str] = Counter()
    both: Counter[str] = Counter()
    total = 0
    if path.exists():
        for line in path.read_text(errors="replace").splitlines():
            stack, _, count = line.rpartition(" ")
            if not stack or not count.isdigit():
                continue
            # py-spy puts the thread first ("process 123:..."/"thread ..."); those are not frames.
            frames = [f for f in stack.split(";") if "(" in f]
            n = int(count)
            if not frames or IDLE.match(frames[-1].strip()):
                continue  # a waiting thread (or a thread without Python frames): not CPU
            w, p = classify(frames)
            total += n
            what[p] += n
            where[w] += n
            both[f"{w} / {p}"] += n

    def pct(counter: Counter[str]) -> dict[str, float]:
        return {k: round(100 * v / total, 1) for k, v in counter.most_common()} if total else {}

    return {"samples": total, "by_part_pct": pct(what), "by_where_pct": pct(where), "by_where_and_part_pct": pct(both)}


def main(argv: list[str] | None = None) -> int:
    """`python -m socialrx_bench.bench_profile FILE...`: the summary of raw py-spy files."""
    import json

    for name in argv if argv is not None else sys.argv[1:]:
        print(name)
        print(json.dumps(summarise(Path(name)), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
