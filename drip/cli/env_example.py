"""``drip settings example``: the ``.env.example`` of the Compose deploy, from ``Settings``.

Every field of :class:`~drip.settings.Settings` gets one comment line and one variable line. The
comment is the field's ``description``, else the comment directly above it in drip/settings.py,
else its trailing comment, else the comment that opens its group of fields. A comment block
followed by a blank line in the class body is a section heading. The file is checked in, and a
test fails when it differs from :func:`env_example`: regenerate it with
``drip settings example > .env.example``.

What docker-compose.yml and the Dockerfile set themselves is listed here too (and checked
against those files by tests/test_compose.py), so ``.env.example`` says which lines matter.
"""

from __future__ import annotations

import ast
import inspect
import io
import textwrap
import tokenize
from dataclasses import dataclass, field
from pathlib import Path

import click
from pydantic import SecretStr
from pydantic.fields import FieldInfo

from drip.settings import ENV_PREFIX, PROJECT_ROOT, Settings

REGENERATE = "drip settings example > .env.example"

# docker compose refuses to start while one of these is empty (``${VAR:?...}`` in the compose
# file): drip's own defaults for them are development values.
REQUIRED = (
    "POSTGRES_PASSWORD",
    "DRIP_SECRET_KEY",
    "DRIP_PUBLIC_URL",
    "DRIP_FROM_EMAIL",
    "DRIP_POSTAL_ADDRESS",
    "DRIP_RUNNERS_LAB_URL",
)
# Set by docker-compose.yml in every drip service's ``environment``, which wins over .env:
# they follow from the other services of the stack, not from a choice made in .env.
COMPOSE_SETS = {
    "DRIP_DATABASE_URL": "postgresql+psycopg://drip:${POSTGRES_PASSWORD}@postgres:5432/drip",
    "DRIP_BROKER_URL": "redis://redis:6379/0",
    "DRIP_REDIS_URL": "redis://redis:6379/1",
    "DRIP_FORWARDED_ALLOW_IPS": "*",
}
# docker-compose.yml's default where drip's own (for development) does not suit production.
COMPOSE_DEFAULTS = {"DRIP_EMAIL_BACKEND": "sendgrid"}
# Paths inside the image, set by the Dockerfile's ENV.
IMAGE_SETS = {
    "DRIP_CONTENT_DIR": "/app/content/lessons",
    "DRIP_TEMPLATES_DIR": "/app/templates",
}
# Not a drip setting: the compose file hands it to PostgreSQL and builds DRIP_DATABASE_URL.
POSTGRES_PASSWORD_DOC = (
    "The drip database's password: docker-compose.yml gives it to the postgres service and builds "
    "DRIP_DATABASE_URL from it, so use letters and digits only (openssl rand -hex 32)."
)
UNDOCUMENTED = "UNDOCUMENTED: write a comment above this field in drip/settings.py"

HEADER = f"""\
# Every drip setting, for the Docker Compose deploy (docs/deploy.md). Start from a copy:
#   cp .env.example .env     (then fill in the required values; keep .env out of git)
# Generated from drip.settings.Settings by `{REGENERATE}`:
# don't edit this file, edit the comments in drip/settings.py and regenerate it.
#
# VAR=        required: docker compose refuses to start while it is empty.
# # VAR=value the value in effect when the line stays commented out; uncomment to change it.
# [secret]    a password, key or token.
# [compose]   docker-compose.yml sets it from the other services; a value here is ignored.
# [compose default] docker-compose.yml's default, where drip's own suits development only.
# [image]     the Dockerfile sets it to the path inside the image.
# Put a value holding $, # or spaces at either end in 'single quotes'.
"""


@dataclass
class _Docs:
    """What drip/settings.py says about the fields of :class:`Settings`."""

    comment: dict[str, str] = field(default_factory=dict)  # field name -> one line
    heading: dict[str, str] = field(default_factory=dict)  # first field of a section -> heading


def _comments(source: str) -> dict[int, str]:
    """Line number -> the text of the comment on that line (pragmas left out)."""
    found: dict[int, str] = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            text = token.string.lstrip("#").strip()
            if not text.startswith(("noqa", "type:", "pragma")):
                found[token.start[0]] = text
    return found


def _block_above(lines: list[str], comments: dict[int, str], line: int) -> tuple[list[str], int]:
    """The comment lines directly above ``line`` (1-based), and the line number of the first."""
    block: list[str] = []
    n = line - 1
    while n >= 1 and lines[n - 1].lstrip().startswith("#"):
        if n in comments:
            block.insert(0, comments[n])
        n -= 1
    return block, n + 1


def _read_docs(cls: type[Settings]) -> _Docs:
    """The comments of ``cls`` and of the Settings classes it derives from."""
    docs = _Docs()
    for klass in reversed(cls.__mro__):
        if isinstance(klass, type) and issubclass(klass, Settings):
            _read_class(klass, docs)
    return docs


def _read_class(cls: type[Settings], docs: _Docs) -> None:
    source = textwrap.dedent(inspect.getsource(cls))
    lines = source.splitlines()
    comments = _comments(source)
    [node] = ast.parse(source).body
    assert isinstance(node, ast.ClassDef)
    group = ""  # the comment that opens the current paragraph of fields
    for statement in node.body:
        if not (isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name)):
            continue
        name = statement.target.id
        own, first = _block_above(lines, comments, statement.lineno)
        if not lines[first - 2].strip():  # a new paragraph of fields starts here
            group = " ".join(own)  # its opening comment also documents the fields after it
            heading, _ = _block_above(lines, comments, first - 1)
            if heading:  # a comment block, then a blank line: a section heading
                docs.heading[name] = " ".join(heading)
        trailing = [
            comments[n]
            for n in range(statement.lineno, (statement.end_lineno or statement.lineno) + 1)
            if n in comments and not lines[n - 1].lstrip().startswith("#")
        ]
        docs.comment[name] = " ".join(own) or " ".join(trailing) or group


def _shown(value: object) -> str:
    """A default as it would be written in the environment."""
    if value is None or isinstance(value, SecretStr):
        return ""  # a secret's default is never printed
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return ",".join(_shown(item) for item in value)
    text = str(value)
    root = f"{PROJECT_ROOT}/"
    return text.replace(root, "") if isinstance(value, str | Path) else text


def _is_secret(info: FieldInfo) -> bool:
    return "SecretStr" in repr(info.annotation)


def _sentence(text: str) -> str:
    text = text.strip()
    text = text[:1].upper() + text[1:]
    return text if text.endswith((".", ")", "!", "?")) else f"{text}."


def _entry(variable: str, doc: str, *, secret: bool, default: str) -> list[str]:
    tags = []
    if variable in REQUIRED:
        tags.append("[required]")
    if secret:
        tags.append("[secret]")
    value = default
    if variable in COMPOSE_SETS:
        tags.append("[compose]")
        value = COMPOSE_SETS[variable]
    elif variable in IMAGE_SETS:
        tags.append("[image]")
        value = IMAGE_SETS[variable]
    elif variable in COMPOSE_DEFAULTS:
        tags.append("[compose default]")
        value = COMPOSE_DEFAULTS[variable]
    comment = " ".join([_sentence(doc or UNDOCUMENTED), *tags])
    line = f"{variable}=" if variable in REQUIRED else f"# {variable}={value}"
    return [f"# {comment}", line]


def env_example(cls: type[Settings] = Settings) -> str:
    """The text of ``.env.example``: every field of ``cls``, one comment line each."""
    docs = _read_docs(cls)
    out = [HEADER]
    out += _entry("POSTGRES_PASSWORD", POSTGRES_PASSWORD_DOC, secret=True, default="")
    for name, info in cls.model_fields.items():
        if name in docs.heading:
            out += ["", f"## {docs.heading[name]}"]
        out.append("")
        variable = f"{ENV_PREFIX}{name.upper()}"
        doc = info.description or docs.comment.get(name, "")
        out += _entry(variable, doc, secret=_is_secret(info), default=_shown(info.get_default()))
    return "\n".join(out) + "\n"


def undocumented(text: str) -> list[str]:
    """The variables whose entry in ``text`` (an :func:`env_example`) has no comment."""
    lines = text.splitlines()
    return [
        lines[i + 1].lstrip("# ").split("=", 1)[0]
        for i, line in enumerate(lines[:-1])
        if UNDOCUMENTED in line
    ]


@click.group("settings")
def settings_group() -> None:
    """The DRIP_* settings."""


@settings_group.command("example")
def settings_example() -> None:
    """Print .env.example: every setting with its default and a comment (`> .env.example`)."""
    click.echo(env_example(), nl=False)
