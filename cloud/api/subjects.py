"""``/api/v1/subjects``: a data subject's access and erasure requests (admin only).

The clear id travels in the POST body, never in a URL, so it lands in no access log; it is turned into
the subject's pseudonym in memory (``cloud/pii.py``) and forgotten. Answers name the pseudonym and where
it appears, never the clear id.
"""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from cloud.api.auth import Admin
from cloud.api.params import Body
from cloud.api.problems import Problem
from cloud.pii import NoKey, SubjectReport, SubjectRequests, load_key


class SubjectIn(Body):
    subject: str = Field(min_length=1, max_length=256, description="the subject's clear id (e.g. a badge number), "
                         "or a pseudonym read off a record")


class EraseIn(SubjectIn):
    reason: str = Field("", max_length=2000, description="why, for the audit trail (e.g. the request's reference)")


class WhereOut(BaseModel):
    asset: str
    point: str
    count: int
    first_ns: int
    last_ns: int


class SubjectOut(BaseModel):
    pseudonym: str
    samples: int = Field(description="samples found (for an erasure: deleted)")
    where: list[WhereOut]


def _out(r: SubjectReport) -> SubjectOut:
    return SubjectOut(pseudonym=r.pseudonym, samples=r.samples,
                      where=[WhereOut(asset=h.asset, point=h.point, count=h.count, first_ns=h.first_ns,
                                      last_ns=h.last_ns) for h in r.hits])


def get_router(platform) -> APIRouter:
    subjects = SubjectRequests(platform.registry, platform.store, load_key(platform.settings.pii_key_file))
    r = APIRouter(prefix="/api/v1/subjects", tags=["subjects"])

    def no_key(exc: NoKey) -> Problem:
        return Problem(409, "Not configured", f"{exc}; a pseudonym can still be looked up as it is")

    @r.post("/find", response_model=SubjectOut)
    def find(body: SubjectIn, p: Admin) -> SubjectOut:
        """Where the subject's personal data is: assets, points, sample counts and time ranges."""
        try:
            return _out(subjects.find(p.tenant, body.subject))
        except NoKey as exc:
            raise no_key(exc) from None

    @r.post("/erase", response_model=SubjectOut)
    def erase(body: EraseIn, p: Admin) -> SubjectOut:
        """Delete all of the subject's personal data; the erasure is audited with the pseudonym only."""
        try:
            return _out(subjects.erase(p.tenant, body.subject, p.actor, body.reason))
        except NoKey as exc:
            raise no_key(exc) from None

    return r
