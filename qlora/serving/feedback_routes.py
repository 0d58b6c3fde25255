"""`POST /v1/feedback` (public) and the admin routes that run experiments and export the journal.

Feedback is accepted only for completion ids this router issued (its journal), within the
TTL; an unknown id is 404, an expired one 410, an id of a failed request 409. Three shapes:
    {"response_id": "...", "rating": "up" | "down"}
    {"response_id": "...", "score": 1..5}
    {"pair": ["<id a>", "<id b>"], "preferred": "<id a>" | "<id b>" | "tie"}
A pair must be two answers from the same alias (a side-by-side of the two arms, see arms.py).
Admin (bearer key): PUT/DELETE/GET /admin/experiments[/<alias>], GET /admin/journal/{responses,feedback}.
"""
from __future__ import annotations

import time
from typing import Literal

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field, model_validator

from qlora.ab.journal import FeedbackRecord
from qlora.serving import protocol as p
from qlora.serving.arms import Experiment

DEFAULT_TTL_S = 7 * 24 * 3600.0


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    response_id: str | None = None
    rating: Literal["up", "down"] | None = None
    score: int | None = Field(None, ge=1, le=5)
    pair: list[str] | None = Field(None, min_length=2, max_length=2)
    preferred: str | None = None

    @model_validator(mode="after")
    def _one_shape(self) -> "FeedbackRequest":
        given = [name for name in ("rating", "score", "pair") if getattr(self, name) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of 'rating' (up/down), 'score' (1..5) or 'pair' (+ 'preferred')")
        if self.pair is not None:
            if self.response_id is not None:
                raise ValueError("a pair names its two ids in 'pair', not in 'response_id'")
            if self.pair[0] == self.pair[1]:
                raise ValueError("'pair' needs two different response ids")
            if self.preferred not in (*self.pair, "tie"):
                raise ValueError("'preferred' must be one of the two ids in 'pair', or 'tie'")
        elif not self.response_id:
            raise ValueError("'response_id' is required with 'rating' or 'score'")
        return self


class ExperimentRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    experiment_id: str = Field(min_length=1)
    control: str = Field(min_length=1)
    candidate: str = Field(min_length=1)
    assignment_header: str = "X-QLora-User"


def _known_response(journal, response_id: str, ttl_s: float) -> dict:
    record = journal.response(response_id)
    if record is None:
        raise p.ApiError(f"response id {response_id!r} was not issued by this router", 404, "NotFoundError",
                         "response_id")
    if time.time() - record["created_at"] > ttl_s:
        raise p.ApiError(f"response {response_id!r} is older than the feedback window ({ttl_s / 3600:g} h)",
                         410, "Gone", "response_id")
    if record["status"] != 200:
        raise p.ApiError(f"response {response_id!r} was a failed request; there is no answer to rate", 409,
                         "Conflict", "response_id")
    return record


def _accept(router, body: FeedbackRequest) -> dict:
    journal, ttl_s = router.arm_routing.journal, router.feedback_ttl_s
    if body.pair is None:
        record = _known_response(journal, body.response_id, ttl_s)
        kind = "rating" if body.rating else "score"
        journal.record_feedback(FeedbackRecord(body.response_id, kind, rating=body.rating or "", score=body.score))
        router.metrics.feedback.labels(record["served"], body.rating or f"score_{body.score}").inc()
        return {"accepted": True, "response_id": body.response_id, "kind": kind}
    first, second = (_known_response(journal, rid, ttl_s) for rid in body.pair)
    if first["alias"] != second["alias"]:
        raise p.ApiError(f"a pair must answer the same model: {first['alias']!r} vs {second['alias']!r}", 400,
                         "BadRequestError", "pair")
    preferred = "" if body.preferred == "tie" else body.preferred
    journal.record_feedback(FeedbackRecord(body.pair[0], "pair", other_response_id=body.pair[1],
                                           preferred_response_id=preferred))
    for record in (first, second):
        outcome = "tie" if not preferred else "win" if record["response_id"] == preferred else "loss"
        router.metrics.feedback.labels(record["served"], outcome).inc()
    return {"accepted": True, "pair": body.pair, "preferred": body.preferred, "kind": "pair"}


def add_feedback_routes(app: FastAPI, router) -> None:
    @app.post("/v1/feedback")
    async def feedback(request: Request):
        if router.arm_routing is None:
            raise p.ApiError("this router keeps no response journal; feedback is off", 501, "NotImplemented")
        body = await p.parse_body(request, FeedbackRequest)
        return await run_in_threadpool(_accept, router, body)  # the journal's fsync stays off the event loop

    @app.get("/admin/experiments")
    async def list_experiments():
        return {"experiments": {a: e.__dict__ for a, e in router.arm_routing.experiments.all().items()}}

    @app.put("/admin/experiments/{alias}")
    async def start_experiment(alias: str, request: Request):
        body = await p.parse_body(request, ExperimentRequest)
        weights = router.aliases.get(alias) or {}
        if set(weights) != {body.control, body.candidate}:
            raise p.ApiError(f"alias {alias!r} must split between {body.control!r} and {body.candidate!r} first "
                             f"(PUT /admin/aliases/{alias}); it has {weights}", 409, "Conflict", "alias")
        try:
            router.arm_routing.experiments.start(Experiment(alias=alias, **body.model_dump()))
        except ValueError as exc:
            raise p.ApiError(str(exc), 409, "Conflict", "experiment_id") from None
        return {"alias": alias, **body.model_dump()}

    @app.delete("/admin/experiments/{alias}")
    async def stop_experiment(alias: str):
        stopped = router.arm_routing.experiments.stop(alias)
        if stopped is None:
            raise p.ApiError(f"alias {alias!r} runs no experiment", 404, "NotFoundError")
        return {"stopped": stopped.__dict__}

    @app.get("/admin/journal/responses")
    async def journal_responses(after: int = 0, limit: int = 5000):
        journal = router.arm_routing.journal
        return {"journal_id": journal.journal_id,
                "rows": await run_in_threadpool(journal.responses_after, after, min(limit, 20000))}

    @app.get("/admin/journal/feedback")
    async def journal_feedback(after: int = 0, limit: int = 5000):
        journal = router.arm_routing.journal
        return {"journal_id": journal.journal_id,
                "rows": await run_in_threadpool(journal.feedback_after, after, min(limit, 20000))}
