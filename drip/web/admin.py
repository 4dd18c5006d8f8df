"""The admin API (``/api/v1/admin``): bearer tokens from ``DRIP_ADMIN_TOKENS``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, Field

from drip.engine.consent import unsubscribe
from drip.errors import InvalidInput
from drip.subscribers.gdpr import erase_subscriber, export_subscriber, subscriber_summary
from drip.subscribers.queries import PAGE_MAX, find_subscriber, list_subscribers
from drip.subscribers.store import add_tags, remove_tags, set_tags
from drip.subscribers.tags import tag_events
from drip.subscribers.validation import clean_tags
from drip.web.api import ERRORS
from drip.web.auth import require_admin
from drip.web.deps import RuntimeDep
from drip.web.errors import ApiError
from drip.web.params import Cursor, RowId

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from drip.models import Subscriber
    from drip.runtime import Runtime

router = APIRouter(
    prefix="/api/v1/admin",
    tags=["admin"],
    dependencies=[Depends(require_admin)],
    responses={k: v for k, v in ERRORS.items() if k in (401, 422)},
)
Status = Literal["pending", "active", "unsubscribed", "erased"]
CourseState = Literal[
    "not_started", "in_course", "completed_course", "stopped", "in_upsell", "converted"
]


class TagsReplace(BaseModel):
    tags: list[str] = Field(description="The complete new set of tags.")


class TagsChange(BaseModel):
    add: list[str] = Field(default_factory=list)
    remove: list[str] = Field(default_factory=list)


def upsell_slugs(rt: Runtime) -> tuple[str, ...]:
    return tuple(slug for slug, seq in rt.library.items() if seq.kind == "upsell")


def _get(session: Session, subscriber_id: int) -> Subscriber:
    sub = find_subscriber(session, subscriber_id)
    if sub is None:
        raise ApiError(404, "subscriber_id", "no such subscriber")
    return sub


def _tags(value: list[str], field: str) -> tuple[str, ...]:
    try:
        return clean_tags(value, field)
    except InvalidInput as err:
        raise ApiError(422, err.field, err.message) from None


@router.get("/subscribers", summary="List subscribers (keyset pagination by id)")
def list_(
    rt: RuntimeDep,
    status: Status | None = None,
    tag: str | None = Query(None, max_length=64),
    q: str | None = Query(None, max_length=320, description="Part of the address or name."),
    state: Annotated[
        CourseState | None, Query(description="Where they stand in the course.")
    ] = None,
    after: Annotated[Cursor, Query(description="The `next_after` of the previous page.")] = 0,
    before: Annotated[
        RowId | None, Query(description="The `previous_before` of a page: the page before it.")
    ] = None,
    limit: int = Query(50, ge=1, le=PAGE_MAX),
) -> dict[str, Any]:
    with rt.sessions() as session:
        result = list_subscribers(
            session,
            status=status,
            tag=tag,
            q=q,
            state=state,
            course=rt.settings.course_sequence,
            upsells=upsell_slugs(rt),
            after=after,
            before=before,
            limit=limit,
        )
        return {
            "items": [subscriber_summary(s) for s in result.items],
            "next_after": result.next_after,
            "previous_before": result.previous_before,
        }


@router.get("/subscribers/{subscriber_id}", summary="One subscriber")
def get(rt: RuntimeDep, subscriber_id: RowId) -> dict[str, Any]:
    with rt.sessions() as session:
        return subscriber_summary(_get(session, subscriber_id))


@router.put("/subscribers/{subscriber_id}/tags", summary="Replace the tags")
def replace_tags(rt: RuntimeDep, subscriber_id: RowId, body: TagsReplace) -> dict[str, Any]:
    tags = _tags(body.tags, "tags")
    with rt.transaction() as session:
        sub = _get(session, subscriber_id)
        before = [t.name for t in sub.tags]
        set_tags(session, sub, tags)
        tag_events(rt, session, sub.id, before, [t.name for t in sub.tags], rt.clock())
        return subscriber_summary(sub)


@router.patch("/subscribers/{subscriber_id}/tags", summary="Add and remove tags")
def change_tags(rt: RuntimeDep, subscriber_id: RowId, body: TagsChange) -> dict[str, Any]:
    add, remove = _tags(body.add, "add"), _tags(body.remove, "remove")
    with rt.transaction() as session:
        sub = _get(session, subscriber_id)
        before = [t.name for t in sub.tags]
        remove_tags(sub, remove)
        add_tags(session, sub, add)
        tag_events(rt, session, sub.id, before, [t.name for t in sub.tags], rt.clock())
        return subscriber_summary(sub)


@router.post("/subscribers/{subscriber_id}/unsubscribe", summary="Unsubscribe from everything")
def unsubscribe_(rt: RuntimeDep, subscriber_id: RowId) -> dict[str, Any]:
    with rt.transaction() as session:
        sub = _get(session, subscriber_id)
        unsubscribe(session, sub, rt.clock(), "admin")
        return subscriber_summary(sub)


@router.get("/subscribers/{subscriber_id}/export", summary="Everything stored (GDPR)")
def export(rt: RuntimeDep, subscriber_id: RowId) -> dict[str, Any]:
    with rt.sessions() as session:
        return export_subscriber(session, _get(session, subscriber_id), rt.clock())


@router.post("/subscribers/{subscriber_id}/erase", summary="Erase personal data (GDPR)")
def erase(rt: RuntimeDep, subscriber_id: RowId) -> dict[str, Any]:
    with rt.transaction() as session:
        erased = erase_subscriber(session, _get(session, subscriber_id), rt.clock())
    return {"id": subscriber_id, "erased": erased}
