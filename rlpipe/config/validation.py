"""pydantic's validation errors in the user's words: one `Problem` per error, naming the dotted key and the fix."""

from __future__ import annotations

from pydantic import ValidationError

from rlpipe.config.errors import Problem
from rlpipe.config.keys import suggest

# pydantic error type -> the rule in the user's words
_FRIENDLY = {
    "int_parsing": "expected a whole number",
    "int_from_float": "expected a whole number, not a fraction",
    "float_parsing": "expected a number",
    "finite_number": "must be a finite number (not inf or nan)",
    "bool_parsing": "expected true or false",
    "string_type": "expected a string",
    "greater_than": "must be greater than {gt}",
    "greater_than_equal": "must be at least {ge}",
    "less_than": "must be less than {lt}",
    "less_than_equal": "must be at most {le}",
    "literal_error": "must be one of {expected}",
    "missing": "is required",
    "dict_type": "expected a mapping of keys to values",
    "list_type": "expected a list",
}


def problems_from_validation(exc: ValidationError) -> list[Problem]:
    """pydantic's errors, translated: dotted key, what is wrong, how to fix it."""
    problems = []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"] if not str(p).startswith(("function-", "tagged-union"))]
        key = ".".join(loc)
        if err["type"] == "extra_forbidden":
            problems.append(Problem(key, "unknown key", suggest(key)))
            continue
        template = _FRIENDLY.get(err["type"])
        message = template.format(**err.get("ctx", {})) if template else err["msg"]
        problems.append(Problem(key, message, f"set {key} to a valid value", err.get("input")))
    return problems
