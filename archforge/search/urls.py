"""Storage URLs: which database a URL names, the driver SQLAlchemy opens it with, and the URL as messages show it.

archforge stores searches in SQLite files or on a PostgreSQL server (``postgresql://``,
``postgres://``, ``postgresql+psycopg://``); a PostgreSQL URL without a driver is opened with
psycopg 2 or 3, whichever is installed (the ``postgres`` extra installs psycopg 3). Every
message, table and printed line shows a URL with its password replaced by ``***``
(:func:`masked_url` for a URL given whole, :func:`shown_url` for a text that quotes URLs).
"""

from __future__ import annotations

import re

from archforge.errors import SearchError

#: libpq keepalives: a connection to a server that vanished (a network split) fails in ~30 s, not at the OS's TCP timeout.
CLIENT_KEEPALIVES = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 3}
_QUERY_PASSWORD = re.compile(r"(?i)(password=)[^&\s]*")
_SERVERS = ("postgresql", "postgres")


def url_password(url: str) -> str | None:
    """The password written in ``url`` (``scheme://user:PASSWORD@host/...``), else ``None``.

    The user information is taken to end at the last ``@`` of the URL: a password may hold
    ``/`` or ``:``, and one with a raw ``@`` is split differently by each reader; taking too
    much only masks more.
    """
    scheme, sep, rest = str(url).partition("://")
    if not sep or "@" not in rest:
        return None
    user_info = rest[:rest.rindex("@")]
    user, colon, password = user_info.partition(":")
    return password if colon and password else None


def masked_url(url: str) -> str:
    """One URL, whole, with its password (whatever characters it holds) replaced by ``***``."""
    url = str(url)
    if url_password(url) is None:
        return _QUERY_PASSWORD.sub(r"\1***", url)
    head, _, rest = url.partition("://")
    at = rest.rindex("@")
    return _QUERY_PASSWORD.sub(r"\1***", f"{head}://{rest[:at].partition(':')[0]}:***{rest[at:]}")


def shown_url(text: str) -> str:
    """``text`` (a URL, or a message quoting one) with passwords replaced by ``***``: ``postgresql://me:***@db/af``."""
    text = re.sub(r"[A-Za-z][A-Za-z0-9+.-]*://\S+", lambda match: masked_url(match.group(0)), str(text))
    return _QUERY_PASSWORD.sub(r"\1***", text)


def _dialect(url: str) -> str:
    """The database of a URL, its driver left out: ``postgresql`` for ``postgresql+psycopg://...``."""
    return str(url).partition("://")[0].lower().partition("+")[0]


def is_postgres(url: str) -> bool:
    """Whether ``url`` names a PostgreSQL server (``postgresql://``, ``postgresql+psycopg://``, ``postgres://``)."""
    return _dialect(url) in _SERVERS


def engine_url(url: str) -> str:
    """``url`` as SQLAlchemy opens it: a PostgreSQL URL without a driver gets psycopg 3 when psycopg2 is missing.

    Raises a one-line :class:`SearchError` naming the extra to install when no driver is.
    """
    if not is_postgres(url):
        return url
    import importlib.util

    scheme, _, rest = url.partition("://")
    driver = scheme.lower().partition("+")[2]
    wanted = {"": ("psycopg2", "psycopg"), "psycopg2": ("psycopg2",), "psycopg": ("psycopg",)}.get(driver, (driver,))
    found = next((name for name in wanted if importlib.util.find_spec(name) is not None), None)
    if found is None:
        raise SearchError(f"storage {masked_url(url)}: the PostgreSQL driver ({' or '.join(wanted)}) is not installed: "
                          "pip install 'archforge-nn[postgres]'")
    return f"postgresql+{found}://{rest}"


def check_server_url(url: str) -> None:
    """Refuse a database server archforge cannot coordinate workers on (anything but SQLite and PostgreSQL)."""
    if _dialect(url) not in ("sqlite", *_SERVERS):
        raise SearchError(f"storage {masked_url(url)}: archforge stores searches in SQLite files or on a PostgreSQL server "
                          "(postgresql://user@host/db); other databases have no lock that keeps two workers from "
                          "training the same candidate")
