"""The web front end reads and writes through the feature packages, never with its own SQL.

A grep over ``drip/web``: a handler that needs data calls a function of ``drip.subscribers``,
``drip.broadcasts``, ``drip.reports``... which returns typed results, so the CLI, the admin API
and the dashboard share one query instead of three copies. The runtime comes from
:mod:`drip.web.deps` (one definition, no ``_rt`` helper per module).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

WEB = Path(__file__).resolve().parent.parent / "drip" / "web"

# The dashboard's own tables (accounts, sign-in sessions, failed sign-ins) are stored by these
# modules: they are the store of those tables, not handlers, and no feature package owns them.
# Handlers call their functions like any other.
ACCOUNT_STORES = {"dashboard/users.py", "dashboard/sessions.py", "dashboard/lockout.py"}

SQL = {
    "a query built here": re.compile(r"(?<![\w.])(?<!def )(select|insert|update|delete)\("),
    "SQL functions": re.compile(r"\bfunc\.\w+\("),
    "a session or connection used directly": re.compile(
        r"\b(session|write|conn|connection|db)\."
        r"(execute|scalar|scalars|get|query|merge|add|add_all|delete|flush|refresh)\("
    ),
    # Only the Session type may be imported, for annotations: nothing to build a query with.
    "SQLAlchemy imported": re.compile(
        r"^\s*(import sqlalchemy\b|from sqlalchemy(?!\.orm import Session$)\S* import)", re.M
    ),
}
RUNTIME = {
    "a copied runtime helper": re.compile(r"\bdef _rt\b"),
    # drip.web.deps is the one reader of app.state.rt (create_app is its one writer).
    "app.state.rt read outside drip.web.deps": re.compile(r"\bstate\.rt\b(?!\s*=)"),
}


def _modules() -> list[Path]:
    return sorted(WEB.rglob("*.py"))


def _name(path: Path) -> str:
    return path.relative_to(WEB).as_posix()


def _violations(text: str, rules: dict[str, re.Pattern[str]]) -> list[str]:
    found = []
    for what, pattern in rules.items():
        for match in pattern.finditer(text):
            line = text.count("\n", 0, match.start()) + 1
            found.append(f"line {line}: {what}: {match.group(0).strip()!r}")
    return found


# The dashboard's own account tables (users, sessions, lock-outs) have no feature package: their
# store modules are the one exemption, listed so that it cannot grow unnoticed.
@pytest.mark.parametrize(
    "path", [p for p in _modules() if _name(p) not in ACCOUNT_STORES], ids=_name
)
def test_no_sql_in_web_modules(path: Path) -> None:
    assert _violations(path.read_text(encoding="utf-8"), SQL) == []


def test_the_exempt_account_stores_exist_and_are_the_only_exemption() -> None:
    names = {_name(p) for p in _modules()}
    assert set(ACCOUNT_STORES) <= names
    assert len(ACCOUNT_STORES) == 3


@pytest.mark.parametrize("path", _modules(), ids=_name)
def test_the_runtime_comes_from_drip_web_deps(path: Path) -> None:
    if _name(path) == "deps.py":
        return
    assert _violations(path.read_text(encoding="utf-8"), RUNTIME) == []


def test_the_rules_catch_what_they_are_for() -> None:
    """Each pattern matches the code it forbids and leaves the allowed forms alone."""
    forbidden = [
        "stmt = select(Broadcast).limit(5)",
        "rows = session.scalars(stmt)",
        "session.execute(delete(Tag))",
        "sub = session.get(Subscriber, 1)",
        "user = write.merge(user)",
        "from sqlalchemy import select",
        "    from sqlalchemy.orm import Session, joinedload",
        "n = func.count()",
    ]
    for line in forbidden:
        assert _violations(line, SQL), line
    allowed = [
        "    from sqlalchemy.orm import Session",
        "changes.update({'a': 1})",
        "def update(request: Request) -> None:",
        "response.delete_cookie('x')",
        "count, _ = pipe.execute()",
        "with rt.sessions() as session:",
    ]
    for line in allowed:
        assert not _violations(line, SQL), line
    assert _violations("def _rt(request):", RUNTIME)
    assert _violations("rt = request.app.state.rt", RUNTIME)
    assert not _violations("app.state.rt = runtime", RUNTIME)
