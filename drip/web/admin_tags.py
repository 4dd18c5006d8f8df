"""Tags and manual starts in the admin API, by address (bearer ``DRIP_ADMIN_TOKENS``).

- ``POST /api/v1/admin/subscribers/{email}/tags`` ``{"tags": [...]}``: add tags; their
  ``tag_added`` events start and stop sequences (drip.subscribers.tags);
- ``DELETE /api/v1/admin/subscribers/{email}/tags/{tag}``: remove one (``tag_removed``);
- ``POST /api/v1/admin/subscribers/{email}/sequences/{slug}``: start a sequence whose
  sequence.toml lists ``[[triggers]] on = "manual"`` (drip.subscribers.manual).

Answers: 200 with the subscriber's tags or the enrollment; 404 for an unknown address or
sequence; 409 when the sequence can't start for them (not manual, not active, in it, done);
422 naming a bad address or tag. Each request is one transaction: all of it, or nothing.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from drip.errors import InvalidInput
from drip.models import Subscriber
from drip.subscribers.manual import Refusal, StartRefused, start_by_hand
from drip.subscribers.store import find_by_email
from drip.subscribers.tags import (
    TagResult,
    add_tags,
    clean_tag_name,
    clean_tag_names,
    remove_tag,
    tags_of,
)
from drip.subscribers.validation import EMAIL_INPUT_MAX, TAGS_MAX, normalize_address
from drip.web.api import ERRORS
from drip.web.auth import require_admin
from drip.web.deps import RuntimeDep
from drip.web.errors import ApiError

Responses = dict[int | str, dict[str, Any]]
_ANSWERS: Responses = {k: v for k, v in ERRORS.items() if k in (401, 422)}
_NOT_FOUND: Responses = {404: {**ERRORS[422], "description": "No subscriber with this address"}}
_NOT_STARTED: Responses = {
    404: {**ERRORS[422], "description": "No subscriber with this address, or no such sequence"},
    409: {**ERRORS[422], "description": "The sequence can't start for them now (the reason)"},
}
router = APIRouter(
    prefix="/api/v1/admin",
    tags=["admin"],
    dependencies=[Depends(require_admin)],
    responses=_ANSWERS,
)

Email = Annotated[str, Path(max_length=EMAIL_INPUT_MAX, description="The subscriber's address.")]


class TagsAdd(BaseModel):
    tags: list[str] = Field(
        min_length=1,
        max_length=TAGS_MAX,
        description="Tags to add: lowercase letters, digits, '-', '_' and ':' (trimmed and "
        "lowercased first), at most 64 characters each.",
    )


class TagsAnswer(BaseModel):
    email: str
    tags: list[str] = Field(description="All the subscriber's tags now.")
    added: list[str] = Field(default_factory=list, description="Tags they did not have before.")
    removed: list[str] = Field(default_factory=list, description="Tags they had before.")
    started: dict[str, int] = Field(description="Enrollments started, per sequence slug.")
    stopped: dict[str, int] = Field(description="Enrollments stopped, per sequence slug.")


class StartAnswer(BaseModel):
    email: str
    sequence: str
    entry: int = Field(description="1 the first time; more after re-entries.")
    next_send_at: datetime | None = Field(description="When its first email is due (UTC).")


def _address(email: str) -> str:
    try:
        return normalize_address(email)
    except InvalidInput as err:
        raise ApiError(422, "email", err.message) from None


def _subscriber(session: Session, address: str) -> Subscriber:
    sub = find_by_email(session, address)
    if sub is None:
        raise ApiError(404, "email", f"no subscriber with the address {address}")
    return sub


def _answer(session: Session, sub: Subscriber, result: TagResult, key: str) -> TagsAnswer:
    assert sub.email is not None  # found by it
    return TagsAnswer.model_validate(
        {
            "email": sub.email,
            "tags": tags_of(session, sub.id),
            key: list(result.changed),
            "started": result.started,
            "stopped": result.stopped,
        }
    )


@router.post(
    "/subscribers/{email}/tags",
    summary="Add tags to a subscriber (starts the sequences they trigger)",
    responses=_NOT_FOUND,
)
def add(rt: RuntimeDep, email: Email, body: TagsAdd) -> TagsAnswer:
    address = _address(email)
    tags = clean_tag_names(body.tags, "tags")  # InvalidInput: the app's 422 naming the field
    with rt.transaction() as session:
        sub = _subscriber(session, address)
        result = add_tags(rt, session, [sub.id], tags, rt.clock())
        return _answer(session, sub, result, "added")


@router.delete(
    "/subscribers/{email}/tags/{tag}",
    summary="Remove a tag from a subscriber (stops and starts what its removal says)",
    responses=_NOT_FOUND,
)
def remove(rt: RuntimeDep, email: Email, tag: Annotated[str, Path(max_length=200)]) -> TagsAnswer:
    address = _address(email)
    name = clean_tag_name(tag, "tag")  # InvalidInput: the app's 422 naming the field
    with rt.transaction() as session:
        sub = _subscriber(session, address)
        result = remove_tag(rt, session, [sub.id], name, rt.clock())
        return _answer(session, sub, result, "removed")


@router.post(
    "/subscribers/{email}/sequences/{slug}",
    summary='Start a sequence by hand (one whose sequence.toml lists on = "manual")',
    responses=_NOT_STARTED,
)
def start_sequence(
    rt: RuntimeDep, email: Email, slug: Annotated[str, Path(max_length=64)]
) -> StartAnswer:
    address = _address(email)
    with rt.transaction() as session:
        sub = _subscriber(session, address)
        try:
            started = start_by_hand(rt, session, sub, slug, rt.clock())
        except StartRefused as err:
            status = 404 if err.reason == Refusal.UNKNOWN_SEQUENCE else 409
            raise ApiError(status, err.field, err.message) from None
        return StartAnswer(
            email=address,
            sequence=started.sequence,
            entry=started.entry,
            next_send_at=started.next_send_at,
        )
