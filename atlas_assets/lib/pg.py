"""PostgreSQL connection settings: checked early, with one clear error naming the setting.

Two settings take a PostgreSQL URL: ``ATLAS_TAGS_URL`` (the live tag store) and
``ATLAS_DAGSTER_PG_URL`` (the Dagster instance). A malformed URL is a ``ValueError`` and a
database that cannot be reached or refuses the credentials a :class:`DatabaseUnavailable`, both
naming the setting and never showing the password, before anything is written.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit

# A SQLAlchemy driver suffix (postgresql+psycopg2://) is accepted and dropped for libpq.
SCHEMES = ("postgresql", "postgres")
DRIVERS = ("", "psycopg2", "psycopg")
# Seconds to wait for a server that does not answer (a firewalled host) before saying so.
CONNECT_TIMEOUT_S = 10


class DatabaseUnavailable(RuntimeError):
    """The database named by a setting cannot be reached, or refuses the credentials."""


def redact(url: str) -> str:
    """``url`` with its password replaced by ``***``, for messages and logs."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = netloc[0].split(":", 1)[0]
    return parts._replace(netloc=f"{user}:***@{netloc[1]}").geturl()


def check_url(url: str, setting: str, *, driver: str | None = None) -> str:
    """``url`` if it is a usable ``postgresql://user[:password]@host[:port]/database[?...]``
    URL (``postgresql+DRIVER://`` too), else a ``ValueError`` naming ``setting`` and what is
    wrong. ``driver``: the SQLAlchemy driver the URL must name (``psycopg2``), if any."""
    scheme_form = f"postgresql+{driver}" if driver else "postgresql"
    form = f"{scheme_form}://USER:PASSWORD@HOST:PORT/DATABASE"
    if not isinstance(url, str) or not url.strip():
        raise ValueError(f"{setting} is empty; expected {form}")
    url = url.strip()
    try:
        parts = urlsplit(url)
        port = parts.port  # parses, so a bad port fails here rather than in the driver
    except ValueError as exc:
        raise ValueError(
            f"{setting} is not a valid URL ({exc}): {redact(url)}; expected {form}"
        ) from None
    base, _, named = parts.scheme.partition("+")
    if base not in SCHEMES or named not in DRIVERS:
        raise ValueError(
            f"{setting} must start with {scheme_form}:// (got {parts.scheme or 'no'} scheme in "
            f"{redact(url)}); expected {form}"
        )
    if driver and named != driver:
        # SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3, with which dagster-postgres
        # 0.29 fails at the first run event (its NOTIFY takes a bound parameter).
        raise ValueError(
            f"{setting} must name the {driver} driver, which Dagster's PostgreSQL storage "
            f"needs: {scheme_form}://... (got {redact(url)})"
        )
    if not parts.hostname:
        raise ValueError(f"{setting} names no host: {redact(url)}; expected {form}")
    if port == 0:
        raise ValueError(f"{setting} has port 0: {redact(url)}")
    database = unquote(parts.path.lstrip("/"))
    if not database or "/" in database:
        raise ValueError(f"{setting} names no database (the path): {redact(url)}; expected {form}")
    return url


def libpq_url(url: str) -> str:
    """``url`` without a SQLAlchemy driver suffix, as libpq (psycopg) reads URLs."""
    scheme, sep, rest = url.partition("://")
    return scheme.partition("+")[0] + sep + rest


def connect(url: str, setting: str, **kwargs: Any):
    """A psycopg 3 connection to ``url`` (checked first); a :class:`DatabaseUnavailable` naming
    ``setting`` when the server is unreachable or refuses the credentials."""
    url = libpq_url(check_url(url, setting))
    try:
        import psycopg
    except ImportError as exc:
        raise DatabaseUnavailable(
            f"{setting} is set but psycopg is not installed: pip install 'atlas-assets[postgres]'"
        ) from exc
    try:
        return psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT_S, **kwargs)
    except psycopg.OperationalError as exc:
        # from None: the driver's own traceback says nothing the message does not.
        raise DatabaseUnavailable(
            f"{setting}: cannot connect to PostgreSQL at {redact(url)}: {_reason(exc)}"
        ) from None


def _reason(exc: Exception) -> str:
    """The server's or the socket's own words, without the driver's framing."""
    text = " ".join(str(exc).split())
    for marker in ("FATAL: ", "failed: "):
        if marker in text:
            text = text.rsplit(marker, 1)[1]
    return text or type(exc).__name__


def check_reachable(url: str, setting: str) -> None:
    """Connect once and close: the early check before a build or an instance writes anything."""
    connect(url, setting).close()
