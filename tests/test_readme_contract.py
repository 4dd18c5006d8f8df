"""README.md and the route tables of docs/ stay true to the real CLI and the real app.

- Every ``drip ...`` named in README.md (code spans and code blocks) is a command of the real
  click tree, and each ``--option`` named with it is one that command accepts; and the other way,
  every option of every command is named with it somewhere in README.md (the CLI table). The
  commands docs/ name exist too.
- Every route of README.md's "HTTP routes" table (method and path, path parameters matched by
  pattern) is served by ``create_app(...)``; and the other way, every route the app serves is in
  the table, but for :data:`INTERNAL_ROUTES`.
- Every ``METHOD /path`` that starts a table row in docs/ is served, and the query parameters a
  row names (``?status=&tag=``) are exactly those the route takes, each enum value named.

Everything is judged from the parser objects and the app's routes as they are when the test runs,
in-process: a renamed command, option or route fails here. The checks are plain functions
(tests/docs_contract.py); the tests at the end feed them wrong samples to show each fails for the
reason it names.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import click
import pytest
from click.testing import CliRunner
from fastapi import FastAPI
from sqlalchemy import update

from drip.cli import subscribers as cli_subscribers
from drip.cli.main import main
from drip.db import make_engine
from drip.migrate import upgrade
from drip.models import Subscriber, SubscriberStatus
from drip.runtime import Runtime
from drip.web.app import create_app
from tests.conftest import REPO, make_settings
from tests.docs_contract import (
    RouteEntry,
    all_commands,
    cli_problems,
    drip_mentions,
    middleware_answers,
    parse_entry,
    query_parameters,
    query_problems,
    route_entries,
    route_problems,
    route_rows,
    served_routes,
    undocumented_options,
    unlisted_routes,
)
from tests.helpers import add_subscriber

README = (REPO / "README.md").read_text(encoding="utf-8")
DOCS = {
    path.name: path.read_text(encoding="utf-8") for path in sorted((REPO / "docs").glob("*.md"))
}
ROUTE_TABLE = "| method and path | what |"  # the header of README's "HTTP routes" table

# Served by the app but not for users or operators, so not in the README's table. Keep it short:
# anything a person or an integration calls belongs in the table.
INTERNAL_ROUTES = {
    ("GET", "/docs/oauth2-redirect"),  # Swagger UI's OAuth2 helper page, loaded by /docs itself
}


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastAPI]:
    """The app as ``drip serve`` builds it; nothing here reaches Redis (no test sends traffic)."""
    folder = tmp_path_factory.mktemp("contract")
    settings = make_settings(
        folder,
        database_url=f"sqlite:///{folder / 'drip.sqlite3'}",
        redis_url=os.environ.get("DRIP_TEST_REDIS_URL", "redis://127.0.0.1:6379/15"),
    )
    engine = make_engine(settings.database_url)
    upgrade(engine)
    yield create_app(Runtime.build(settings, engine=engine))
    engine.dispose()


def _readme_routes() -> list[RouteEntry]:
    entries, problems = route_entries(README, ROUTE_TABLE)
    assert problems == []
    assert entries, f"README.md has no route table headed {ROUTE_TABLE}"
    return entries


# --------------------------------------------------------------------------- README: the CLI


def test_every_command_and_option_in_the_readme_exists() -> None:
    assert len(drip_mentions(README)) >= len(list(all_commands(main)))
    assert cli_problems(README, main) == []


def test_every_option_is_named_in_the_readme() -> None:
    assert undocumented_options(README, main) == []


def test_every_command_and_option_in_docs_exists() -> None:
    problems = [
        f"docs/{name}: {p}" for name, text in DOCS.items() for p in cli_problems(text, main)
    ]
    assert problems == []


@pytest.mark.parametrize(
    ("words", "option", "default"),
    [
        (("serve",), "--log-level", "INFO"),
        (("broadcast", "show"), "--interval", 2.0),
        (("subscribers", "purge-pending"), "--days", None),  # None: DRIP_PENDING_PURGE_DAYS
    ],
)
def test_the_defaults_the_readme_names(words: tuple[str, ...], option: str, default: Any) -> None:
    command: Any = main
    for word in words:
        command = command.commands[word]
    [param] = [p for p in command.params if option in p.opts]
    assert param.default == default


def test_purge_pending_takes_its_age_from_days_or_the_setting(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    sid = add_subscriber(
        rt,
        "late@example.com",
        status=SubscriberStatus.PENDING,
        enroll_now=False,
        created_at=rt.clock() - timedelta(days=5),
    )
    with rt.transaction() as session:  # never confirmed
        session.execute(update(Subscriber).where(Subscriber.id == sid).values(confirmed_at=None))
    monkeypatch.setattr(cli_subscribers, "_runtime", lambda: rt)

    def purge(*options: str) -> str:
        result = CliRunner().invoke(main, ["subscribers", "purge-pending", *options])
        assert result.exit_code == 0, result.output
        return result.output

    assert rt.settings.pending_purge_days == 30
    assert purge() == "0 unconfirmed signups deleted\n"
    assert purge("--days", "7") == "0 unconfirmed signups deleted\n"
    assert purge("--days", "3") == "1 unconfirmed signups deleted\n"
    with rt.sessions() as session:
        assert session.get(Subscriber, sid) is None


# --------------------------------------------------------------------------- README: the routes


def test_every_route_in_the_readme_is_served(app: FastAPI) -> None:
    assert route_problems(_readme_routes(), served_routes(app), middleware_answers(app)) == []


def test_every_served_route_is_in_the_readme(app: FastAPI) -> None:
    served = served_routes(app)
    assert len(served) > 20  # the walk found the included routers' routes
    assert unlisted_routes(_readme_routes(), served, INTERNAL_ROUTES) == []


def test_the_internal_routes_are_served(app: FastAPI) -> None:
    served = {(route.method, route.path) for route in served_routes(app)}
    assert served >= INTERNAL_ROUTES, "an exemption for a route that is gone: remove it"


# --------------------------------------------------------------------------- docs: route tables


def _docs_routes() -> list[tuple[str, RouteEntry]]:
    return [(name, entry) for name, text in DOCS.items() for entry in route_rows(text)]


def test_every_route_in_the_docs_tables_is_served(app: FastAPI) -> None:
    documented = _docs_routes()
    assert len(documented) > 20
    served, answers = served_routes(app), middleware_answers(app)
    problems = [
        f"docs/{name}: {problem}"
        for name, entry in documented
        for problem in route_problems([entry], served, answers)
    ]
    assert problems == []


def test_the_query_parameters_the_docs_name_are_the_routes(app: FastAPI) -> None:
    queried = [(name, entry) for name, entry in _docs_routes() if entry.query is not None]
    assert len(queried) >= 2, "the admin lists' rows name their query parameters"
    problems = [
        f"docs/{name}: {problem}"
        for name, entry in queried
        for problem in query_problems(
            entry, query_parameters(app, entry.method or "GET", entry.path)
        )
    ]
    assert problems == []


# --------------------------------------------------------------------------- the checks fail


def test_a_renamed_option_or_command_fails() -> None:
    """Through the same functions: a tree where ``--days`` became ``--age`` and a command was
    renamed, against text that still names the old ones."""

    @click.group()
    def tool() -> None:
        pass

    @tool.group()
    def subscribers() -> None:
        pass

    @subscribers.command("purge-pending")
    @click.option("--age", type=int)
    def purge(age: int) -> None:
        pass

    text = (
        "| `drip subscribers purge-pending [--days N]` | delete stale signups |\n"
        "```sh\n"
        "drip subscribers purge --days 3   # an old name\n"
        "echo yes | drip subscribers purge-pending --age 3 && drip subscribers ...\n"
        "```\n"
    )
    assert cli_problems(text, tool) == [
        "line 1: `drip subscribers purge-pending [--days N]`: "
        "`drip subscribers purge-pending` has no option --days",
        "line 3: `drip subscribers purge --days 3`: `drip subscribers` has no command 'purge'",
    ]
    assert undocumented_options("`drip subscribers purge-pending`", tool) == [
        "`drip subscribers purge-pending --age` is named nowhere with its command"
    ]


def test_a_wrong_option_of_the_real_cli_fails() -> None:
    assert cli_problems("`drip serve --log-levels DEBUG`", main) == [
        "line 1: `drip serve --log-levels DEBUG`: `drip serve` has no option --log-levels"
    ]
    assert cli_problems("`drip worker --concurrency 4`", main) == []  # Celery's option


def test_a_renamed_or_missing_route_fails(app: FastAPI) -> None:
    served, answers = served_routes(app), middleware_answers(app)
    wrong = [
        parse_entry(text)
        for text in ("GET /healthzz", "POST /healthz", "GET /t/x/{token}", "/nowhere...")
    ]
    assert route_problems([e for e in wrong if e], served, answers) == [
        "`GET /healthzz` is not served by the app",
        "`POST /healthz` is not served by the app",
        "`GET /t/x/{token}` is not served by the app",
        "`/nowhere...` is not served by the app",
    ]
    right = [parse_entry(t) for t in ("GET /t/c/<token>", "GET /confirm/{any_name}", "/admin...")]
    assert route_problems([e for e in right if e], served, answers) == []
    without_admin = [e for e in _readme_routes() if not e.path.startswith("/admin")]
    assert "POST /admin/logout" in unlisted_routes(without_admin, served, INTERNAL_ROUTES)
    _, problems = route_entries("| method and path | what |\n| --- | --- |\n| healthz | x |\n",
                                "| method and path | what |")  # fmt: skip
    assert problems == ["line 3: 'healthz' is not `METHOD /path` or `/path...`"]


def test_a_wrong_query_parameter_or_a_missing_value_fails(app: FastAPI) -> None:
    text = "| `GET /api/v1/admin/subscribers?status=&colour=` | `status` one of active, erased |"
    entries, _ = route_entries(f"| method and path | what |\n| --- | --- |\n{text}\n",
                               "| method and path | what |")  # fmt: skip
    [entry] = entries
    assert entry.query == ("status", "colour")
    problems = query_problems(entry, query_parameters(app, "GET", entry.path))
    assert "`GET /api/v1/admin/subscribers?status=&colour=`: the route takes no colour=" in problems
    assert "`GET /api/v1/admin/subscribers?status=&colour=`: state= is left out" in problems
    assert (
        "`GET /api/v1/admin/subscribers?status=&colour=`: status=pending is not named" in problems
    )
    assert not [p for p in problems if "status=active" in p or "status=erased" in p]
    assert query_problems(entry, None) == [
        "`GET /api/v1/admin/subscribers?status=&colour=`: no such route"
    ]
