"""Async gRPC client of the served teacher (`tritonclient.grpc.aio`).

    async with TeacherClient.from_settings(settings) as client:
        labels = await client.score(queries, pin_texts)   # one TeacherLabel per pair

Pairs are cut into batches of `batch_size`; at most `max_in_flight` batches are on the
wire at once (Triton's dynamic batcher merges them server-side), and a batch's request
tensors are built only once it holds one of those slots, so one client never holds more
than `max_in_flight` requests' inputs and results, whatever the caller hands it.

Each request carries the client's `priority`: the exported model's dynamic batcher has two
levels (`priority_levels: 2`, `default_priority_level: 2`) and dequeues level 1 before
level 2, so the live labeler (priority 1) overtakes a backfill (priority 2) in Triton's
queue. 0 means "the model's default level". Each request has a
deadline; UNAVAILABLE / DEADLINE_EXCEEDED / RESOURCE_EXHAUSTED are retried with
exponential backoff. Errors name the server, the model and what to do:
`TeacherUnavailable` (server down or unreachable), `TeacherVersionMissing` (the model or
the requested version is not served). Every result carries the Triton version number
that produced it and the teacher version that number maps to (config parameters written
by `freshlabel teacher export`). `score(..., embeddings=True)` also asks for the teacher's
bi-encoder embeddings of each pair (the labeler's student drift monitor reads them); every
request names the outputs it wants, so the others are never computed into a response.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import tritonclient.grpc.aio as grpcclient
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt
from tritonclient.utils import InferenceServerException

from infra.config import Settings

RETRYABLE = {
    "StatusCode.UNAVAILABLE",
    "StatusCode.DEADLINE_EXCEEDED",
    "StatusCode.RESOURCE_EXHAUSTED",
}


class TeacherClientError(RuntimeError):
    """A request to the served teacher failed; the message says what to do."""


class TeacherUnavailable(TeacherClientError):
    """No Triton server answers at the configured address."""


class TeacherVersionMissing(TeacherClientError):
    """Triton answers but does not serve the model or the requested version."""


# What every request asks for; `score(..., embeddings=True)` adds EMBEDDING_OUTPUTS. A
# request naming no outputs would get every declared one, embeddings included.
LABEL_OUTPUTS = ("probs", "score", "label")
EMBEDDING_OUTPUTS = ("query_embedding", "pin_embedding")


@dataclass(frozen=True, slots=True)
class TeacherLabel:
    probs: list[float]
    score: float
    label: int
    model_version: str  # Triton version number that answered, e.g. "1"
    teacher_version: str  # the trained teacher behind it
    # With `score(..., embeddings=True)`: the teacher's bi-encoder embeddings (float32,
    # (d,)) of the query and of the pin text as its bi-encoder view reads it.
    query_embedding: np.ndarray | None = None
    pin_embedding: np.ndarray | None = None


class TeacherClient:
    def __init__(
        self,
        url: str,
        model_name: str = "teacher",
        model_version: str = "",
        max_in_flight: int = 64,
        batch_size: int = 16,
        timeout_s: float = 30.0,
        retries: int = 3,
        backoff_s: float = 0.2,
        priority: int = 0,
    ):
        """
        Args:
            url: host:port of Triton's gRPC endpoint.
            model_name: The served model.
            model_version: A Triton version number to pin ("" = the served one).
            max_in_flight: Requests on the wire at once (the client's memory bound).
            batch_size: Pairs per request.
            timeout_s: Deadline of each request.
            retries: Retries of UNAVAILABLE / DEADLINE_EXCEEDED / RESOURCE_EXHAUSTED.
            backoff_s: First retry delay (doubles, with jitter).
            priority: Triton priority level of every inference request (1 is served
                first; 0 = the model's `default_priority_level`).

        Raises:
            ValueError: `max_in_flight` or `batch_size` below 1, or a negative priority.
        """
        if max_in_flight < 1 or batch_size < 1:
            raise ValueError("max_in_flight and batch_size must be at least 1")
        if priority < 0:
            raise ValueError(
                f"priority must be 0 (the model's default level) or a Triton level >= 1, "
                f"got {priority}"
            )
        self.url = url
        self.model_name = model_name
        self.model_version = model_version
        self.max_in_flight = max_in_flight
        self.batch_size = batch_size
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.priority = priority
        self._client = grpcclient.InferenceServerClient(url=url)
        self._slots = asyncio.Semaphore(max_in_flight)
        self._teacher_versions: dict[str, str] = {}
        # From the model config (`check`): whether `score(..., embeddings=True)` gets them.
        self.serves_embeddings: bool | None = None

    @classmethod
    def from_settings(cls, settings: Settings, **overrides: object) -> TeacherClient:
        t = settings.triton
        values: dict[str, object] = {
            "url": t.url or f"{t.host}:{t.grpc_port}",
            "model_name": t.model_name,
            "max_in_flight": t.max_in_flight,
            "timeout_s": t.request_timeout_s,
            "retries": t.retries,
            "backoff_s": t.retry_backoff_s,
        }
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]

    async def __aenter__(self) -> TeacherClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._client.close()

    def _what(self) -> str:
        version = f" version {self.model_version}" if self.model_version else ""
        return f"model {self.model_name!r}{version} at {self.url}"

    def _unavailable(self, detail: str) -> TeacherUnavailable:
        return TeacherUnavailable(
            f"the teacher's Triton server at {self.url} is not reachable ({detail}); start it "
            "with `freshlabel up` (with a teacher configured) or point FRESHLABEL_TRITON__URL "
            "at a running server"
        )

    def _backoff(self, state: RetryCallState) -> float:
        """`backoff_s` doubling with each retry, times a jitter factor in [0.5, 1.5)."""
        return self.backoff_s * 2 ** (state.attempt_number - 1) * (0.5 + random.random())

    async def _call(self, make_call, what: str):
        """Run one RPC with deadline, retries and backoff; map errors to clear ones."""
        retrying = AsyncRetrying(
            retry=retry_if_exception(
                lambda exc: (
                    isinstance(exc, InferenceServerException) and (exc.status() or "") in RETRYABLE
                )
            ),
            stop=stop_after_attempt(self.retries + 1),
            wait=self._backoff,
            sleep=asyncio.sleep,
            reraise=True,
        )

        async def attempt():  # a coroutine function, so tenacity awaits each call
            return await make_call()

        try:
            return await retrying(attempt)
        except InferenceServerException as exc:
            status = exc.status() or ""
            message = exc.message() or str(exc)
            if status == "StatusCode.UNAVAILABLE":
                raise self._unavailable(f"{what}: {message}") from exc
            if status == "StatusCode.DEADLINE_EXCEEDED":
                raise TeacherClientError(
                    f"{what} on {self._what()} exceeded {self.timeout_s}s "
                    f"{retrying.statistics['attempt_number']} time(s); raise "
                    "FRESHLABEL_TRITON__REQUEST_TIMEOUT_S or lower max_in_flight"
                ) from exc
            if "unknown model" in message.lower() or status == "StatusCode.NOT_FOUND":
                raise TeacherVersionMissing(
                    f"{self._what()} is not served: {message}. Export it with `freshlabel "
                    "teacher export --version N` and restart Triton, or request a served "
                    f"version ({await self._served_versions_text()})"
                ) from exc
            raise TeacherClientError(f"{what} on {self._what()} failed: {message}") from exc

    async def _served_versions_text(self) -> str:
        try:
            meta = await self._client.get_model_metadata(
                self.model_name, as_json=True, client_timeout=self.timeout_s
            )
            return "served: " + (", ".join(meta.get("versions", [])) or "none")
        except InferenceServerException:
            return f"model {self.model_name!r} not loaded"

    async def check(self) -> dict[str, str]:
        """Fail fast with a clear error unless the model (version) is ready; returns the
        `teacher_version.<N>` / `label_scale.<N>` map from the model config."""
        live = await self._call(
            lambda: self._client.is_server_live(client_timeout=self.timeout_s), "health check"
        )
        if not live:
            raise self._unavailable("server not live")
        ready = await self._call(
            lambda: self._client.is_model_ready(
                self.model_name, self.model_version, client_timeout=self.timeout_s
            ),
            "model readiness",
        )
        if not ready:
            raise TeacherVersionMissing(
                f"{self._what()} is not ready ({await self._served_versions_text()}); export "
                "it with `freshlabel teacher export` and restart Triton"
            )
        return await self._parameters()

    async def _parameters(self) -> dict[str, str]:
        config = await self._call(
            lambda: self._client.get_model_config(
                self.model_name, self.model_version, as_json=True, client_timeout=self.timeout_s
            ),
            "model config",
        )
        # Whether the model declares the embedding outputs (teachers exported before they
        # were served, or without a bi-encoder, do not: asking for them is an error).
        declared = {o.get("name") for o in config.get("config", {}).get("output", [])}
        self.serves_embeddings = set(EMBEDDING_OUTPUTS) <= declared
        params = config.get("config", {}).get("parameters", {})
        values = {k: v.get("string_value", "") for k, v in params.items()}
        self._teacher_versions = {
            k.split(".", 1)[1]: v for k, v in values.items() if k.startswith("teacher_version.")
        }
        return values

    async def _teacher_version(self, model_version: str) -> str:
        if model_version not in self._teacher_versions:
            await self._parameters()
        return self._teacher_versions.get(model_version, "unknown")

    async def _infer_batch(
        self, queries: Sequence[str], pin_texts: Sequence[str], embeddings: bool = False
    ):
        n = len(queries)
        async with self._slots:
            # Built inside the slot: at most `max_in_flight` requests exist at once.
            q = np.asarray([s.encode("utf-8") for s in queries], dtype=object).reshape(n, 1)
            p = np.asarray([s.encode("utf-8") for s in pin_texts], dtype=object).reshape(n, 1)
            inputs = [
                grpcclient.InferInput("query", [n, 1], "BYTES"),
                grpcclient.InferInput("pin_text", [n, 1], "BYTES"),
            ]
            inputs[0].set_data_from_numpy(q)
            inputs[1].set_data_from_numpy(p)
            names = LABEL_OUTPUTS + (EMBEDDING_OUTPUTS if embeddings else ())
            outputs = [grpcclient.InferRequestedOutput(name) for name in names]
            result = await self._call(
                lambda: self._client.infer(
                    self.model_name,
                    inputs,
                    outputs=outputs,
                    model_version=self.model_version,
                    priority=self.priority,
                    client_timeout=self.timeout_s,
                ),
                f"inference of {n} pairs",
            )
            response = result.get_response()
            vectors = None
            if embeddings:
                # None when this version's teacher has none (a repository mixing versions).
                q_emb, p_emb = (result.as_numpy(name) for name in EMBEDDING_OUTPUTS)
                if q_emb is not None and p_emb is not None:
                    vectors = (q_emb, p_emb)
            return (
                result.as_numpy("probs"),
                result.as_numpy("score").reshape(-1),
                result.as_numpy("label").reshape(-1),
                response.model_version,
                vectors,
            )

    async def score(
        self, queries: Sequence[str], pin_texts: Sequence[str], embeddings: bool = False
    ) -> list[TeacherLabel]:
        """Teacher labels for (query, pin_text) pairs, in input order.

        Args:
            queries: One query per pair.
            pin_texts: The teacher input of each pair's pin (same length).
            embeddings: Also request `query_embedding` and `pin_embedding` (the vectors the
                teacher's bi cosine read; they cost the server no extra forward pass) when
                the model declares them (`serves_embeddings`, from its config).

        Returns:
            One `TeacherLabel` per pair, each naming the version that produced it (and,
            with `embeddings` from a model that serves them, the pair's two embeddings;
            None otherwise).

        Raises:
            ValueError: the two sequences differ in length.
            TeacherUnavailable: no server answers (after the retries).
            TeacherVersionMissing: the model or the pinned version is not served.
            TeacherClientError: the server refused the request (or its deadline passed).
        """
        if len(queries) != len(pin_texts):
            raise ValueError(f"{len(queries)} queries but {len(pin_texts)} pin texts")
        if embeddings and self.serves_embeddings is None:
            await self._parameters()
        # A model that does not declare them would refuse the request: pairs come without.
        embeddings = embeddings and bool(self.serves_embeddings)
        starts = range(0, len(queries), self.batch_size)
        batches = await asyncio.gather(
            *(
                self._infer_batch(
                    queries[s : s + self.batch_size],
                    pin_texts[s : s + self.batch_size],
                    embeddings,
                )
                for s in starts
            )
        )
        out: list[TeacherLabel] = []
        for probs, score, label, version, vectors in batches:
            teacher = await self._teacher_version(version)
            q, p = vectors if vectors is not None else (None, None)
            for i in range(len(score)):
                out.append(
                    TeacherLabel(
                        probs=probs[i].tolist(),
                        score=float(score[i]),
                        label=int(label[i]),
                        model_version=version,
                        teacher_version=teacher,
                        query_embedding=None if q is None else q[i],
                        pin_embedding=None if p is None else p[i],
                    )
                )
        return out
