"""The configured endpoints: ``DRIP_OUTGOING_WEBHOOKS`` and ``webhooks.toml``, read at start.

The file is ``webhooks.toml`` in the folder that holds the lessons folder: ``content/webhooks.toml``
beside ``content/lessons`` (``DRIP_CONTENT_DIR``). Its secrets are named by ``secret_env`` and read
from the environment here, once. A problem stops the start with :class:`SettingsError` naming
the file or the variable, the entry and the key (never the secret).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from drip.errors import SettingsError
from drip.outgoing_endpoints import Endpoint, read_toml
from drip.settings import Settings

FILE_NAME = "webhooks.toml"


def endpoints_file(settings: Settings) -> Path:
    """Where the endpoints file is looked for: beside the lessons folder."""
    return settings.content_dir.parent / FILE_NAME


def load_endpoints(
    settings: Settings, environ: Mapping[str, str] | None = None
) -> tuple[Endpoint, ...]:
    """Every configured endpoint: those of the setting, then those of the file, if it exists."""
    path = endpoints_file(settings)
    try:
        from_file = read_toml(path, os.environ if environ is None else environ)
    except ValueError as err:
        raise SettingsError(f"{path}: {err}") from None
    known = {endpoint.url for endpoint in settings.outgoing_webhooks}
    for endpoint in from_file:
        if endpoint.url in known:
            raise SettingsError(
                f"{path}: {endpoint.url}: also in DRIP_OUTGOING_WEBHOOKS; list it in one place"
            )
    return (*settings.outgoing_webhooks, *from_file)
