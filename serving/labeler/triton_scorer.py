"""The labeler's view of the served teacher: Triton through the async gRPC client.

Version and scale always come from what Triton reports (its model config parameters and the
version number in each response), never from local configuration. Errors are sorted into the
labeler's two kinds: `ScorerUnavailable` (the server is down, the model or its version is not
loaded, a deadline passed, or a served version has no `teacher_version.<N>` parameter yet:
wait and retry) and `ScoringFailed` (the server answered and refused the inputs: isolate the
rows and dead-letter them).

Live labeling and backfills share one client class; they differ only in the Triton priority
their requests carry (`labeler.live_priority`, `labeler.backfill_priority`), so a backfill
never queues ahead of fresh traffic on the server.
"""

from __future__ import annotations

from collections.abc import Sequence

from infra.config import Settings
from serving.client import (
    TeacherClient,
    TeacherClientError,
    TeacherUnavailable,
    TeacherVersionMissing,
)
from serving.labeler.labeler import UNKNOWN_VERSIONS, ScoredPair, ScorerUnavailable, ScoringFailed
from serving.labeler.metrics import Traffic


class TritonScorer:
    def __init__(self, client: TeacherClient) -> None:
        self.client = client

    @classmethod
    def from_settings(
        cls, settings: Settings, model_version: str = "", traffic: Traffic = "live"
    ) -> TritonScorer:
        """A scorer on the configured Triton.

        Args:
            settings: The platform settings (`triton`, `labeler`).
            model_version: A Triton version number to pin ("" = the served one).
            traffic: "live" or "backfill": picks the requests' Triton priority.

        Returns:
            The scorer; `close()` it when done.
        """
        cfg = settings.labeler
        if traffic == "live":
            rows, in_flight, priority = cfg.request_rows, cfg.max_in_flight, cfg.live_priority
        else:
            # Small backfill batches: a live request waits for at most one of them.
            rows, in_flight = cfg.backfill_request_rows, cfg.backfill_max_in_flight
            priority = cfg.backfill_priority
        return cls(
            TeacherClient.from_settings(
                settings,
                model_version=model_version,
                batch_size=rows,
                max_in_flight=in_flight,
                priority=priority,
            )
        )

    async def served(self) -> tuple[str, int]:
        try:
            params = await self.client.check()
        except (TeacherUnavailable, TeacherVersionMissing) as exc:
            # A version roll briefly unloads the model: wait for it like for an outage.
            raise ScorerUnavailable(str(exc)) from exc
        version = self.client.model_version
        teacher = params.get(f"teacher_version.{version}") if version else None
        scale = params.get(f"label_scale.{version}") if version else None
        teacher = teacher or params.get("teacher_version", "")
        scale = scale or params.get("label_scale", "")
        if teacher in UNKNOWN_VERSIONS or not scale:
            raise ScorerUnavailable(
                f"the model config at {self.client.url} names no teacher version (an export "
                "in progress?); waiting for `freshlabel teacher export` to finish"
            )
        return teacher, int(scale)

    async def score(
        self, queries: Sequence[str], pin_texts: Sequence[str], embeddings: bool = False
    ) -> list[ScoredPair]:
        try:
            results = await self.client.score(queries, pin_texts, embeddings=embeddings)
        except (TeacherUnavailable, TeacherVersionMissing) as exc:
            raise ScorerUnavailable(str(exc)) from exc
        except TeacherClientError as exc:
            if "exceeded" in str(exc):  # a deadline: the server is overloaded or restarting
                raise ScorerUnavailable(str(exc)) from exc
            raise ScoringFailed(str(exc)) from exc
        if any(r.teacher_version in UNKNOWN_VERSIONS for r in results):
            raise ScorerUnavailable(
                f"Triton at {self.client.url} answered with model version(s) "
                f"{sorted({r.model_version for r in results})} that its config does not name "
                "(a half-written export?); waiting for the repository to settle"
            )
        return [
            ScoredPair(
                probs=r.probs,
                score=r.score,
                teacher_version=r.teacher_version,
                label_scale=len(r.probs),
                query_embedding=r.query_embedding,
                pin_embedding=r.pin_embedding,
            )
            for r in results
        ]

    async def model_version_of(self, teacher_version: str) -> str:
        """The Triton version number that serves `teacher_version` (for backfills)."""
        params = await self.client.check()
        for key, value in params.items():
            if key.startswith("teacher_version.") and value == teacher_version:
                return key.split(".", 1)[1]
        served = sorted(v for k, v in params.items() if k.startswith("teacher_version."))
        raise TeacherVersionMissing(
            f"teacher version {teacher_version!r} is not in the served repository "
            f"(served: {', '.join(served) or 'none'}); export it with `freshlabel teacher "
            "export --version N` and let Triton load it"
        )

    async def close(self) -> None:
        await self.client.close()
