"""Checks of Markdown against the real CLI and the real app, as plain functions.

Used by tests/test_readme_contract.py. Each takes the text and the click group or the app's
routes it is judged against, so a test can feed it a wrong sample and see it fail for the reason
it names:

- :func:`cli_problems`: each ``drip ...`` in code spans and code blocks is a command of the tree,
  each ``--option`` named with it one it accepts; :func:`undocumented_options`, the other way.
- :func:`route_problems`: each route a table names is served (path parameters by pattern, or
  answered by an :data:`ANSWERING_MIDDLEWARE`); :func:`unlisted_routes`, the other way.
- :func:`query_problems`: a route row's ``?a=&b=`` names exactly the route's query parameters,
  and its text every value of an enum among them.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import shlex
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import click
from fastapi import FastAPI
from starlette.types import Message, Receive, Scope, Send

from drip.web.tracking import TrackingEndpoints

# ASGI middleware that answers requests itself instead of passing them to the router: its paths
# are in no route list, so a route is also served when one of these answers it.
ANSWERING_MIDDLEWARE = (TrackingEndpoints,)

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")


# --------------------------------------------------------------------------- the CLI


@dataclass(frozen=True)
class Mention:
    """One ``drip ...`` in the Markdown: its line and the words after ``drip``."""

    line: int
    words: tuple[str, ...]

    def __str__(self) -> str:
        return f"line {self.line}: `drip {' '.join(self.words)}`"


_FENCE = re.compile(r"^\s*(```|~~~)")
_SPAN = re.compile(r"`([^`\n]+)`")
_SHELL_LANGUAGES = frozenset({"", "sh", "bash", "shell", "console", "text"})
_DRIP = re.compile(r"(?<![^\s/])drip[ \t]+")  # at the start, after a space or a path's "/"
_SHELL_COMMENT = re.compile(r"(^|\s)#.*$")
_SHELL_SEPARATOR = re.compile(r"\s(?:&&|\|\||;|\|)\s")
_OPTION = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")


def drip_mentions(markdown: str) -> list[Mention]:
    """Every ``drip ...`` in a code span or a code block line of ``markdown``.

    In a code block a line may hold a pipeline and a comment: each command of it counts, the
    comment does not. In a span (a table cell) ``\\|`` separates alternatives of one command,
    and ``unknown|failed`` within a word counts as each of them.
    """
    found: list[Mention] = []
    in_block = False
    code = False  # a block in a programming language: ``from drip import x`` is no command
    for number, line in enumerate(markdown.splitlines(), start=1):
        if _FENCE.match(line):
            in_block = not in_block
            language = line.strip().lstrip("`~").strip().lower()
            code = in_block and language not in _SHELL_LANGUAGES
            continue
        if code:
            continue
        if in_block:
            pieces = _SHELL_SEPARATOR.split(_SHELL_COMMENT.sub("", line))
        else:
            pieces = [span.replace("\\|", "|") for span in _SPAN.findall(line)]
        for piece in pieces:
            for start in _DRIP.finditer(piece):
                words = _words(piece[start.end() :])
                found += [Mention(number, one) for one in _alternatives(words)]
    return found


def _words(text: str) -> list[str]:
    """Shell words (a quoted value is one word); plain words if the quotes don't pair up."""
    try:
        return shlex.split(text)
    except ValueError:
        return text.split()


def _alternatives(words: list[str]) -> list[tuple[str, ...]]:
    """``unknown|failed`` names two commands (or values): one word list per combination."""
    choices = [w.split("|") if "|" in w.strip("|") else [w] for w in words if w != "|"]
    return [tuple(one) for one in itertools.product(*choices)] if choices else []


@dataclass(frozen=True)
class Named:
    """An option as a mention names it, with the command (or group) it was named on."""

    path: tuple[str, ...]
    command: click.Command
    option: str


@dataclass(frozen=True)
class Resolved:
    """A mention resolved against the click tree: the command it names, the words that name it,
    the options it names (each on the group or command it follows), and what was wrong."""

    command: click.Command
    path: tuple[str, ...]
    options: tuple[Named, ...]
    problem: str | None = None


def resolve(mention: Mention, root: click.Group) -> Resolved:
    """Walk the words through ``root``'s groups: after a group come its own options (with their
    values), then one of its commands or ``...`` (its commands in general); after a command,
    its arguments and options."""
    command: click.Command = root
    path: tuple[str, ...] = ("drip",)
    named: list[Named] = []
    rest = list(mention.words)
    while isinstance(command, click.Group) and rest:
        word = rest.pop(0)
        if _OPTION.fullmatch(word.split("=")[0]):
            named.append(Named(path, command, word.split("=")[0]))
            if _takes_value(command, word) and rest:
                rest.pop(0)
            continue
        if word == "...":
            break
        sub = command.commands.get(word)
        if sub is None:
            problem = f"{mention}: `{' '.join(path)}` has no command {word!r}"
            return Resolved(command, path, tuple(named), problem)
        command, path = sub, (*path, word)
    named += [Named(path, command, option) for option in _OPTION.findall(" ".join(rest))]
    return Resolved(command, path, tuple(named))


def _takes_value(command: click.Command, word: str) -> bool:
    """Whether the option ``word`` of ``command`` is followed by its value as the next word."""
    for param in command.params:
        if word in param.opts and isinstance(param, click.Option):
            return not (param.is_flag or param.count)
    return False


def accepted_options(command: click.Command) -> set[str]:
    """The ``--long`` options ``command`` accepts, ``--help`` included."""
    params = command.get_params(click.Context(command))
    return {opt for p in params for opt in (*p.opts, *p.secondary_opts) if opt.startswith("--")}


def passes_options_on(command: click.Command) -> bool:
    """``drip worker`` and ``drip beat`` hand unknown options to Celery: not ours to check."""
    return bool(command.context_settings.get("ignore_unknown_options"))


def cli_problems(markdown: str, root: click.Group) -> list[str]:
    """Each command named in ``markdown`` that ``root`` lacks, each option its command refuses."""
    problems = []
    for mention in drip_mentions(markdown):
        resolved = resolve(mention, root)
        if resolved.problem:
            problems.append(resolved.problem)
            continue
        for named in resolved.options:
            if passes_options_on(named.command):
                continue
            if named.option not in accepted_options(named.command):
                where = " ".join(named.path)
                problems.append(f"{mention}: `{where}` has no option {named.option}")
    return problems


def all_commands(group: click.Group, path: tuple[str, ...] = ("drip",)) -> Iterator[Any]:
    """(path, command) of every group and command under ``group``."""
    for name, command in group.commands.items():
        yield (*path, name), command
        if isinstance(command, click.Group):
            yield from all_commands(command, (*path, name))


def undocumented_options(markdown: str, root: click.Group) -> list[str]:
    """Each option of each group and command of ``root`` that ``markdown`` never names with it."""
    named: dict[tuple[str, ...], set[str]] = {}
    for mention in drip_mentions(markdown):
        for one in resolve(mention, root).options:
            named.setdefault(one.path, set()).add(one.option)
    missing = []
    for path, command in all_commands(root):
        if passes_options_on(command):
            continue
        for option in sorted(accepted_options(command) - {"--help"} - named.get(path, set())):
            missing.append(f"`{' '.join(path)} {option}` is named nowhere with its command")
    return missing


# --------------------------------------------------------------------------- the routes


@dataclass(frozen=True)
class RouteEntry:
    """A route as a table names it: ``GET /confirm/{token}``, or ``/admin...`` (the path and
    everything under it, any method). ``query`` holds the names of a ``?a=&b=`` after it."""

    text: str
    method: str | None
    path: str
    family: bool = False
    query: tuple[str, ...] | None = None
    row: str = ""  # the whole table row it came from


@dataclass(frozen=True)
class Served:
    method: str
    path: str  # as the app declares it, with its {parameters}


_ENTRY = re.compile(
    rf"^(?:(?P<method>{'|'.join(METHODS)}) )?(?P<path>/[^\s?\[]*?)(?P<family>\.\.\.)?"
    r"(?:\[?\?(?P<query>[^\]]*)\]?)?$"
)
_PARAMETER = re.compile(r"\{[^}]*\}|<[^>]*>")


def pattern(path: str) -> str:
    """``path`` with every parameter (``{id}``, ``{name:path}``, ``<token>``) as ``{}``."""
    return _PARAMETER.sub("{}", path)


def parse_entry(text: str) -> RouteEntry | None:
    found = _ENTRY.match(text)
    if not found:
        return None
    query = None
    if found["query"] is not None:
        query = tuple(part.split("=")[0] for part in found["query"].split("&") if part)
    return RouteEntry(text, found["method"], found["path"], bool(found["family"]), query)


def table_rows(markdown: str, header: str) -> Iterator[tuple[int, str, str]]:
    """(line number, first cell, row) of each row of every table whose header is ``header``."""
    lines = markdown.splitlines()
    for index, line in enumerate(lines):
        if line.strip() != header:
            continue
        for number in range(index + 2, len(lines)):  # after the |---| line
            row = lines[number]
            if not row.startswith("|"):
                break
            yield number + 1, row.split(" | ")[0].lstrip("| ").strip(), row


def route_entries(markdown: str, header: str) -> tuple[list[RouteEntry], list[str]]:
    """The route entries of the tables under ``header``, and the cells that name none."""
    entries, problems = [], []
    for number, cell, row in table_rows(markdown, header):
        spans = _SPAN.findall(cell)
        parsed = [parse_entry(span) for span in spans]
        if not spans or None in parsed:
            problems.append(f"line {number}: {cell!r} is not `METHOD /path` or `/path...`")
        entries += [replace(entry, row=row) for entry in parsed if entry is not None]
    return entries, problems


def route_rows(markdown: str) -> list[RouteEntry]:
    """The routes of every table row, anywhere in ``markdown``, whose first cell is nothing but
    ``METHOD /path`` code spans (``GET /`` and ``GET /signup``): the route tables of docs/."""
    entries = []
    for row in markdown.splitlines():
        if not row.startswith("| `"):
            continue
        spans = _SPAN.findall(row.split(" | ")[0])
        parsed = [parse_entry(span) for span in spans]
        if all(entry is not None and entry.method for entry in parsed):
            entries += [replace(entry, row=row) for entry in parsed if entry is not None]
    return entries


def served_routes(app: FastAPI) -> set[Served]:
    """Every (method, path) of the app's router; HEAD only where it is not GET's twin."""
    try:  # FastAPI >= 0.120 keeps included routers as branches; this walks them
        from fastapi.routing import iter_route_contexts

        routes: Iterable[Any] = iter_route_contexts(app.routes)
    except ImportError:
        routes = app.routes
    served = set()
    for route in routes:
        methods = set(getattr(route, "methods", None) or ())
        if "GET" in methods:
            methods.discard("HEAD")  # Starlette answers HEAD on every GET route
        path = getattr(route, "path", None)
        served |= {Served(method, path) for method in methods if path}
    return served


def in_family(entry: RouteEntry, route: Served) -> bool:
    inside = route.path == entry.path or route.path.startswith(entry.path.rstrip("/") + "/")
    return inside and entry.method in (None, route.method)


def covers(entry: RouteEntry, route: Served) -> bool:
    if entry.family:
        return in_family(entry, route)
    same_path = pattern(entry.path) == pattern(route.path)
    return same_path and entry.method in (None, route.method)


Answers = Callable[[str, str], bool]


def route_problems(
    entries: Iterable[RouteEntry], served: set[Served], answered: Answers
) -> list[str]:
    """Each entry the app does not serve: no route of the router matches its method and path
    pattern (a family: no route under its path), and no answering middleware takes it."""
    problems = []
    for entry in entries:
        if any(covers(entry, route) for route in served):
            continue
        if not entry.family and answered(entry.method or "GET", entry.path):
            continue
        problems.append(f"`{entry.text}` is not served by the app")
    return problems


def unlisted_routes(
    entries: Iterable[RouteEntry], served: set[Served], internal: set[tuple[str, str]]
) -> list[str]:
    """Each route the app serves that no entry covers and ``internal`` does not exempt."""
    listed = list(entries)
    return sorted(
        f"{route.method} {route.path}"
        for route in served
        if (route.method, route.path) not in internal
        and not any(covers(entry, route) for entry in listed)
    )


def middleware_answers(app: FastAPI) -> Answers:
    """Whether one of the app's :data:`ANSWERING_MIDDLEWARE` answers ``method path`` itself
    (a sample value in each path parameter) instead of passing it on."""

    def answers(method: str, path: str) -> bool:
        sample = _PARAMETER.sub("sample", path)
        for middleware in app.user_middleware:
            if middleware.cls in ANSWERING_MIDDLEWARE and _answers(middleware, method, sample):
                return True
        return False

    return answers


def _answers(middleware: Any, method: str, path: str) -> bool:
    passed_on = []

    async def inner(scope: Scope, receive: Receive, send: Send) -> None:
        passed_on.append(scope["path"])

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        pass

    scope: Scope = {
        "type": "http",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [],
        "client": ("127.0.0.1", 1),
    }
    instance = middleware.cls(inner, *middleware.args, **middleware.kwargs)
    asyncio.run(instance(scope, receive, send))
    return not passed_on


def query_parameters(app: FastAPI, method: str, path: str) -> dict[str, list[str]] | None:
    """The query parameters of the route ``method path`` in the app's OpenAPI, each with the
    values it allows when it is an enum (else ``[]``); None when there is no such route."""
    spec = app.openapi()
    for declared, operations in spec["paths"].items():
        if pattern(declared) == pattern(path) and method.lower() in operations:
            parameters = operations[method.lower()].get("parameters", [])
            return {p["name"]: _enum(spec, p["schema"]) for p in parameters if p["in"] == "query"}
    return None


def _enum(spec: dict[str, Any], schema: dict[str, Any]) -> list[str]:
    """The enum values of a parameter's schema (through ``anyOf`` and ``$ref``), or ``[]``."""
    if "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    if "enum" in schema:
        return [str(value) for value in schema["enum"]]
    return [value for one in schema.get("anyOf", []) for value in _enum(spec, one)]


def query_problems(entry: RouteEntry, taken: dict[str, list[str]] | None) -> list[str]:
    """What the row of ``entry`` gets wrong about the route's query: a name it takes that the row
    leaves out or the other way round, an allowed value of an enum the row does not name."""
    if taken is None:
        return [f"`{entry.text}`: no such route"]
    named = set(entry.query or ())
    problems = [f"`{entry.text}`: the route takes no {n}=" for n in sorted(named - set(taken))]
    problems += [f"`{entry.text}`: {n}= is left out" for n in sorted(set(taken) - named)]
    words = set(re.findall(r"[\w-]+", entry.row))
    for name, values in taken.items():
        problems += [f"`{entry.text}`: {name}={v} is not named" for v in values if v not in words]
    return problems
