"""Produce from a child process, so generating and kafka-python's per-record work (~35 us of
CPU per record here) run on two cores instead of sharing one interpreter.

The parent encodes events (`event.key`, `event.to_bytes()`) and writes them in batches to the
child's stdin (`python -m streams.generator.producer_process`: it imports nothing from the
caller's script); the child sends them in the same order with one producer and answers on
stdout with what the broker acknowledged. A full pipe blocks the parent, so the broker's pace
is the generator's pace.

Frames on stdin: 4-byte big-endian length + payload. The first payload is the settings JSON,
then pickled lists of (topic, key, value); a zero length ends the stream. Lines on stdout:
`ready`, then one JSON object: {"acked": {...}} or {"error": "..."}.
"""

from __future__ import annotations

import json
import logging
import pickle
import select
import struct
import subprocess
import sys
import time
from typing import IO, Any

from infra.config import PROJECT_ROOT, Settings
from schemas.base import Event
from streams.generator.writer import KafkaEventWriter, ProduceError, require_broker

BATCH_EVENTS = 1000
# A batch waits at most this long, so slow paced runs still flow.
BATCH_SECONDS = 0.05
_START_TIMEOUT_S = 60.0
_LENGTH = struct.Struct(">I")


def _read_frame(stream: IO[bytes]) -> bytes:
    header = stream.read(_LENGTH.size)
    if len(header) < _LENGTH.size:
        raise EOFError("the parent closed the pipe before the end-of-stream frame")
    (size,) = _LENGTH.unpack(header)
    return stream.read(size) if size else b""


def child_main() -> int:
    logging.getLogger("kafka").setLevel(logging.CRITICAL)
    stdin, stdout = sys.stdin.buffer, sys.stdout
    try:
        settings = Settings(**json.loads(_read_frame(stdin)))
        writer = KafkaEventWriter(settings)
        print("ready", file=stdout, flush=True)
        while frame := _read_frame(stdin):
            for topic, key, value in pickle.loads(frame):
                writer.send_raw(topic, key, value)
        print(json.dumps({"acked": writer.close()}), file=stdout, flush=True)
        return 0
    except Exception as exc:  # the parent raises it with context
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}), file=stdout, flush=True)
        return 1


class ProducerProcess:
    """Same interface as `KafkaEventWriter` (`observe`, `close`), producing in a child."""

    def __init__(self, settings: Settings) -> None:
        self.bootstrap = settings.broker.bootstrap
        require_broker(settings)
        self._process = subprocess.Popen(
            [sys.executable, "-m", "streams.generator.producer_process"],
            cwd=PROJECT_ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert self._process.stdin is not None and self._process.stdout is not None
        self._stdin, self._stdout = self._process.stdin, self._process.stdout
        self._batch: list[tuple[str, bytes, bytes]] = []
        self._batch_started = time.monotonic()
        self._write(settings.model_dump_json().encode())
        if self._answer(_START_TIMEOUT_S) != "ready":
            raise ProduceError(f"the producer process did not start (broker {self.bootstrap})")

    def _answer(self, timeout_s: float) -> Any:
        """The child's next stdout line: 'ready' or its final JSON; raises on an error."""
        ready, _, _ = select.select([self._stdout], [], [], timeout_s)
        line = self._stdout.readline().decode().strip() if ready else ""
        if line == "ready":
            return line
        if not line:
            self.abort()
            raise ProduceError(
                f"the producer process (pid {self._process.pid}) gave no answer within "
                f"{timeout_s:.0f} s; exit code {self._process.poll()}; broker {self.bootstrap}"
            )
        answer = json.loads(line)
        if "error" in answer:
            self.abort()
            raise ProduceError(f"producing to {self.bootstrap} failed: {answer['error']}")
        return answer["acked"]

    def _write(self, payload: bytes) -> None:
        try:
            self._stdin.write(_LENGTH.pack(len(payload)) + payload)
        except BrokenPipeError:
            # The child stopped early: its last line says why.
            self._answer(5.0)
            raise ProduceError(
                f"the producer process stopped early (broker {self.bootstrap})"
            ) from None

    def observe(self, event: Event) -> None:
        self._batch.append((event.topic, event.key.encode(), event.to_bytes()))
        if (
            len(self._batch) >= BATCH_EVENTS
            or time.monotonic() - self._batch_started > BATCH_SECONDS
        ):
            self._ship()

    def _ship(self) -> None:
        if self._batch:
            self._write(pickle.dumps(self._batch, protocol=pickle.HIGHEST_PROTOCOL))
            self._stdin.flush()
        self._batch = []
        self._batch_started = time.monotonic()

    def close(self, timeout_s: float = 300.0) -> dict[str, int]:
        """Send the rest, wait until the broker acknowledged everything; counts per topic."""
        self._ship()
        self._write(b"")
        self._stdin.close()
        acked: dict[str, int] = self._answer(timeout_s)
        self._process.wait(timeout=30)
        self._stdout.close()
        return acked

    def abort(self) -> None:
        """Stop the child (our own, by its PID) without waiting for acknowledgements."""
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait(timeout=10)
        for stream in (self._stdin, self._stdout):
            try:
                stream.close()
            except OSError:
                pass


if __name__ == "__main__":
    sys.exit(child_main())
