"""Everything a running engine needs, built once per process from the settings: the wiring.

A command, a worker or the web app builds one :class:`Runtime` at start-up. Building it loads and
checks every sequence, so the engine refuses to start on a broken lesson file. This is the one
module that knows every part (the layer between the front ends and the features, see
docs/architecture.md): the engine and the features only name :class:`Runtime` in annotations.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from drip.broadcasts.message import BroadcastSource
from drip.clock import Clock, system_clock
from drip.content.forms import BUILTIN_DEFAULT, Form
from drip.content.loading import load_content
from drip.content.render import Renderer
from drip.content.types import DEFAULT_FORM, Sequence
from drip.db import engine_for, session_factory
from drip.engine.automations import Automations
from drip.engine.kinds import Sources
from drip.engine.lessons import LessonSource
from drip.engine.throttle import Throttle, throttle_for
from drip.errors import SettingsError
from drip.esp import make_backend
from drip.esp.base import EmailBackend
from drip.outgoing import bind_endpoints, load_endpoints
from drip.settings import Settings
from drip.subscribers.confirm import ConfirmationSource
from drip.tokens import UNSUBSCRIBE_PURPOSE, subscriber_token


def default_sources() -> Sources:
    """One message source per kind of email (drip.engine.kinds)."""
    sources = (LessonSource(), BroadcastSource(), ConfirmationSource())
    return {source.kind: source for source in sources}


def builtin_forms() -> dict[str, Form]:
    """The forms of a runtime built without a forms folder: the built-in default only."""
    return {DEFAULT_FORM: BUILTIN_DEFAULT}


def automations_for(
    library: Mapping[str, Sequence], course: str | None, forms: Mapping[str, Form]
) -> Automations:
    """The library's index plus each form's ``sequence``: a form naming a sequence is the same
    as that sequence having ``[[triggers]] on = "form"`` for it (both may say it; it starts once).
    A default form that names a sequence replaces the ``DRIP_COURSE_SEQUENCE`` fallback."""
    default = forms.get(DEFAULT_FORM)
    base = Automations.of(library, None if default and default.sequence else course)
    starts = dict(base.starts)
    for slug in sorted(forms):
        sequence = library.get(forms[slug].sequence or "")
        if sequence is None:
            continue
        started = starts.get(("form", slug), ())
        if all(s.slug != sequence.slug for s in started):
            starts[("form", slug)] = (*started, sequence)
    return Automations(starts, base.ends)


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    library: dict[str, Sequence]
    renderer: Renderer
    backend: EmailBackend
    clock: Clock = system_clock
    # The provider's hold shared by every worker (drip.engine.throttle); None: built from the
    # settings.
    throttle: Throttle = None  # type: ignore[assignment]
    # Where each kind of email's message comes from (drip.engine.kinds).
    sources: Sources = field(default_factory=default_sources)
    # The signup forms by slug (drip.content.forms), always with a ``default``.
    forms: dict[str, Form] = field(default_factory=builtin_forms)
    # What starts and ends each sequence (drip.engine.automations); None: read from the library.
    automations: Automations = None  # type: ignore[assignment]
    sessions: sessionmaker[Session] = field(init=False)

    def __post_init__(self) -> None:
        self.sessions = session_factory(self.engine)
        # Every session knows the outgoing webhooks' endpoints: emitters are handed sessions.
        bind_endpoints(self.sessions, load_endpoints(self.settings))
        if self.automations is None:
            course = self.settings.course_sequence
            self.automations = automations_for(self.library, course, self.forms)
        if self.throttle is None:
            self.throttle = throttle_for(self.settings, self.clock)

    @classmethod
    def build(
        cls,
        settings: Settings,
        *,
        engine: Engine | None = None,
        backend: EmailBackend | None = None,
        clock: Clock = system_clock,
        throttle: Throttle | None = None,
    ) -> Runtime:
        """Load the content (raising ContentError if broken) and wire the parts together."""
        forms, library = load_content(settings)
        if settings.course_sequence not in library:
            known = ", ".join(sorted(library)) or "none"
            raise SettingsError(
                f"DRIP_COURSE_SEQUENCE: no sequence {settings.course_sequence!r} in "
                f"{settings.content_dir} (found: {known})"
            )
        return cls(
            settings=settings,
            engine=engine or engine_for(settings.database_url),
            library=library,
            renderer=Renderer(settings, tracking=True),  # DRIP_TRACK_OPENS/CLICKS decide
            backend=backend or make_backend(settings, clock=clock),
            clock=clock,
            throttle=throttle or throttle_for(settings, clock),
            forms=forms,
        )

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A session in a transaction: committed on success, rolled back on error."""
        with self.sessions() as session, session.begin():
            yield session

    @property
    def secret(self) -> str:
        return self.settings.secret_key.get_secret_value()

    def unsubscribe_url(self, subscriber_id: int) -> str:
        token = subscriber_token(self.secret, UNSUBSCRIBE_PURPOSE, subscriber_id)
        return f"{self.settings.public_url}/unsubscribe/{token}"

    def course(self) -> Sequence:
        return self.library[self.settings.course_sequence]
