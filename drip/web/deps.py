"""The dependencies every router shares: the app's :class:`~drip.runtime.Runtime`.

``create_app`` stores the runtime on ``app.state.rt``; this is the one place that reads it.
Route functions declare ``rt: RuntimeDep``; code that runs outside FastAPI's dependency
injection (page rendering, the dashboard's session check, the figure cache) calls
:func:`runtime` with the request.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from drip.runtime import Runtime


def runtime(request: Request) -> Runtime:
    """The runtime of the app serving ``request``."""
    rt: Runtime = request.app.state.rt
    return rt


RuntimeDep = Annotated[Runtime, Depends(runtime)]
