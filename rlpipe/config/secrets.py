"""Secrets kept out of what rlpipe shows: config errors, the start-of-run table, resolved_config.yaml, `--miles`,
reward-service errors and server log excerpts.

A secret is (1) the value of a key whose name looks secret (`api_key`, `*token`, `*secret*`, `*password*`, ...),
(2) the credentials inside a URL (`user:password@`, query parameters such as `?token=`, `api_key=`, `key=`), and
(3) the value of a secret-named environment variable (WANDB_API_KEY, HF_TOKEN, ...) wherever it appears in text.
Only what is shown is redacted: the config, and so what the run uses, keeps the real values. Host names stay
visible, so a message still says which service it is about.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

REDACTED = "<redacted>"
# Substrings that make a key name secret (after lower-casing and `-` -> `_`).
_SECRET_WORDS = (
    "password",
    "passwd",
    "secret",
    "api_key",
    "apikey",
    "access_key",
    "private_key",
    "credential",
    "authorization",
    "signature",
)
# Whole names that are secret on their own (Miles' --wandb-key), and those that are only in a URL's query
# (`?key=`, `?sig=`): in prose "key=value" is an example, not a secret.
_SECRET_NAMES = frozenset({"wandb_key"})
_SECRET_PARAMS = frozenset({"key", "auth", "sig"})
# Environment values shorter than this are not searched for: too likely to occur by chance.
_MIN_ENV_SECRET_CHARS = 8

_URL = r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>`]+"
# name, an optional closing quote (repr/JSON keys), `=` or `:`, then the value (quoted or up to a separator).
_PAIR = r"(?P<name>[A-Za-z_][\w.-]*)(?P<sep>['\"]?\s*[=:]\s*)(?P<value>'[^']*'|\"[^\"]*\"|[^\s&,;'\"]+)"
_PATTERN = re.compile(f"(?P<url>{_URL})|{_PAIR}")
_URL_START = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


def is_secret_key(name: str) -> bool:
    """Whether a config key, flag (`--api-key`) or environment variable name holds a secret. A dotted name is
    judged by its last part (`sglang.extra.api_key`); `max_tokens` or `input_key` are not secret, `hf_token` is."""
    leaf = name.rsplit(".", 1)[-1].strip("-").lower().replace("-", "_")
    return leaf in _SECRET_NAMES or leaf.endswith("token") or any(word in leaf for word in _SECRET_WORDS)


def _redact_params(text: str) -> str:
    """A query string or fragment with the values of secret-named parameters replaced."""
    parts = []
    for part in text.split("&"):
        name, eq, _ = part.partition("=")
        secret = is_secret_key(unquote(name)) or unquote(name).lower() in _SECRET_PARAMS
        parts.append(f"{name}={REDACTED}" if eq and secret else part)
    return "&".join(parts)


def redact_url(url: str) -> str:
    """The URL with its password (or a lone user part, often a token) and secret query parameters replaced;
    scheme, host, port and path kept. Anything that does not parse as a URL is returned unchanged."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    netloc = parts.netloc
    userinfo, at, host = netloc.rpartition("@")
    if at:
        user, colon, _ = userinfo.partition(":")
        netloc = f"{user}:{REDACTED}@{host}" if colon else f"{REDACTED}@{host}"
    query, fragment = _redact_params(parts.query), _redact_params(parts.fragment)
    if (netloc, query, fragment) == (parts.netloc, parts.query, parts.fragment):
        return url  # untouched: not even re-normalized by urlunsplit
    return urlunsplit((parts.scheme, netloc, parts.path, query, fragment))


def _env_secrets() -> list[str]:
    """Values of secret-named environment variables (WANDB_API_KEY, HF_TOKEN, ...)."""
    values = {v for k, v in os.environ.items() if is_secret_key(k) and len(v) >= _MIN_ENV_SECRET_CHARS}
    return list(values)


def _redact_patterns(text: str) -> str:
    """URLs and secret-named pairs redacted, scanning left to right; after a pair whose name is not secret the
    scan goes on inside its value (`rm_url=http://u:pw@host`, `args=Args(api_key='x')`)."""
    out, pos = [], 0
    while m := _PATTERN.search(text, pos):
        out.append(text[pos : m.start()])
        if m["url"]:
            out.append(redact_url(m["url"]))
            pos = m.end()
        elif is_secret_key(m["name"]):
            quote = m["value"][0] if m["value"][:1] in ("'", '"') else ""
            out.append(f"{m['name']}{m['sep']}{quote}{REDACTED}{quote}")
            pos = m.end()
        else:
            out.append(m["name"] + m["sep"])
            pos = m.end("sep")
    return "".join(out) + text[pos:]


def redact_text(text: str, known: Iterable[str] = ()) -> str:
    """Free text (a message, a log line, a command) with URL credentials, `secret_name=value` /
    `'secret_name': 'value'` pairs, secret environment values and the `known` secrets replaced by `<redacted>`."""
    text = _redact_patterns(text)
    for value in sorted({*_env_secrets(), *(k for k in known if k)}, key=len, reverse=True):
        text = text.replace(value, REDACTED)
    return text


def argv_secrets(argv: Sequence[str]) -> list[str]:
    """The values a command line gives secret-named flags (`--api-key KEY`, `--api-key=KEY`): what a log of that
    process may echo in any format, so that log excerpts can be cleaned of them."""
    found = []
    for i, word in enumerate(argv):
        flag, eq, value = word.partition("=")
        if not flag.startswith("-") or not is_secret_key(flag):
            continue
        if eq:
            found.append(value)
        elif i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            found.append(argv[i + 1])
    return found


def redact(value: Any, key: str = "") -> Any:
    """A copy of a config value (nested dicts and lists included) safe to show: the whole value under a
    secret-named key (None and booleans kept: they say whether it is set), a string that is a URL through
    redact_url as a whole (its password may hold what ends a URL in prose), every string through redact_text."""
    if is_secret_key(key) and value is not None and not isinstance(value, bool):
        return REDACTED
    if isinstance(value, dict):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(redact(v, key) for v in value)
    if isinstance(value, str):
        return redact_text(redact_url(value) if _URL_START.match(value) else value)
    return value
