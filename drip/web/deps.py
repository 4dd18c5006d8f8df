"""The dependencies every router shares: the app's :class:`~drip.runtime.Runtime`, and how it
hands delivery ids to the workers.

``create_app`` stores the runtime on ``app.state.rt`` and the hand-over on ``app.state.enqueue``
(None: the Celery send task); this is the one place that reads them.
Route functions declare ``rt: RuntimeDep``; code that runs outside FastAPI's dependency
injection (page rendering, the dashboard's session check, the figure cache) calls
:func:`runtime` with the request.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from drip.engine.handover import Enqueue
from drip.runtime import Runtime
from workers.producer import celery_enqueue


def runtime(request: Request) -> Runtime:
    """The runtime of the app serving ``request``."""
    rt: Runtime = request.app.state.rt
    return rt


async def _runtime_dependency(request: Request) -> Runtime:
    # A coroutine, so FastAPI calls it in the event loop: a plain function dependency costs a
    # hop to the thread pool on every request (the Event Webhook's hot path).
    return runtime(request)


RuntimeDep = Annotated[Runtime, Depends(_runtime_dependency)]


def enqueue(request: Request) -> Enqueue:
    """How the app hands delivery ids to the workers (the Celery send task unless injected)."""
    found: Enqueue | None = getattr(request.app.state, "enqueue", None)
    return found if found is not None else celery_enqueue


EnqueueDep = Annotated[Enqueue, Depends(enqueue)]
