"""Reading the bash of Miles/slime launch scripts: statements, words, variables, arrays, `source`, and the train line.

A small reader for the bash these scripts use (arrays, `+=`, `source`, `\\` continuations, comments, quotes, simple
variables); what it cannot follow is reported, never guessed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from rlpipe.config.miles.flags import Unmapped


class BashSyntaxError(ValueError):
    """The script uses bash this reader does not follow (an unclosed quote or substitution)."""


def _line_of(text: str, i: int) -> int:
    return text.count("\n", 0, i) + 1


def _scan_dquote(text: str, i: int) -> int:
    """Index just past the double-quoted string opening at text[i]."""
    j = i + 1
    while j < len(text):
        if text[j] == "\\":
            j += 2
        elif text[j] == '"':
            return j + 1
        elif text.startswith("$(", j):
            j = _scan_closing(text, j + 1, "(", ")")
        else:
            j += 1
    raise BashSyntaxError(f"unclosed double quote from line {_line_of(text, i)}")


def _scan_closing(text: str, i: int, open_: str, close: str) -> int:
    """Index just past the `close` matching the `open_` at text[i], quotes and nesting respected."""
    depth, j = 0, i
    while j < len(text):
        c = text[j]
        if c == "\\":
            j += 2
            continue
        if c == "'":
            end = text.find("'", j + 1)
            if end < 0:
                break
            j = end + 1
            continue
        if c == '"':
            j = _scan_dquote(text, j)
            continue
        depth += (c == open_) - (c == close)
        j += 1
        if depth == 0:
            return j
    raise BashSyntaxError(f"unclosed `{open_}` from line {_line_of(text, i)}")


def lex(text: str) -> list[list[str]]:
    """Split bash into statements of raw words (quotes kept); `(` and `)` are words of their own.

    Newlines end statements except inside `( ... )` (array bodies); `;`, `&&`, `||`, `|`, `&` end them too.
    Comments and `\\`-newline continuations are dropped; `$(...)`, `${...}` and quotes stay inside their word."""
    statements: list[list[str]] = []
    words: list[str] = []
    buf: list[str] = []
    depth, i, n = 0, 0, len(text)

    def end_word() -> None:
        if buf:
            words.append("".join(buf))
            buf.clear()

    def end_statement() -> None:
        end_word()
        if words:
            statements.append(words.copy())
            words.clear()

    while i < n:
        c = text[i]
        if c == "\\":
            if text.startswith("\n", i + 1):
                i += 2  # line continuation
                continue
            buf.append(text[i : i + 2])
            i += 2
        elif c == "'":
            end = text.find("'", i + 1)
            if end < 0:
                raise BashSyntaxError(f"unclosed single quote from line {_line_of(text, i)}")
            buf.append(text[i : end + 1])
            i = end + 1
        elif c == '"':
            end = _scan_dquote(text, i)
            buf.append(text[i:end])
            i = end
        elif c == "$" and text.startswith(("(", "{"), i + 1):
            end = _scan_closing(text, i + 1, text[i + 1], ")" if text[i + 1] == "(" else "}")
            buf.append(text[i:end])
            i = end
        elif c == "#" and not buf:
            end = text.find("\n", i)
            i = n if end < 0 else end
        elif c in " \t\r":
            end_word()
            i += 1
        elif c == "\n":
            end_word() if depth else end_statement()
            i += 1
        elif c in "()":
            end_word()
            words.append(c)
            depth = depth + 1 if c == "(" else max(0, depth - 1)
            i += 1
        elif c == "&" and text.startswith(">", i + 1):
            buf.append("&>")
            i += 2
        elif c in ";|&":
            end_word() if depth else end_statement()
            i += 2 if text[i : i + 2] in ("&&", "||") else 1
        else:
            buf.append(c)
            i += 1
    end_statement()
    return statements


_VAR = re.compile(r"\$(?:\{(\w+)(?::?-([^}]*))?\}|([A-Za-z_]\w*))")
_ARRAY_REF = re.compile(r'"?\$\{(\w+)\[@\]\}"?')


def expand(raw: str, env: dict[str, str], quoted: bool = False) -> str:
    """Bash's quote removal and `$VAR` / `${VAR}` / `${VAR:-default}` expansion of one word.

    Unknown variables and `$(...)` stay as written (they need a shell); there is no word splitting."""
    out, i = [], 0
    while i < len(raw):
        c = raw[i]
        if c == "\\":
            nxt = raw[i + 1 : i + 2]
            out.append(nxt if not quoted or nxt in '"\\$`' else c + nxt)
            i += 2
        elif c == "'" and not quoted:
            end = raw.index("'", i + 1)
            out.append(raw[i + 1 : end])
            i = end + 1
        elif c == '"' and not quoted:
            end = _scan_dquote(raw, i)
            out.append(expand(raw[i + 1 : end - 1], env, quoted=True))
            i = end
        elif raw.startswith("$(", i):
            end = _scan_closing(raw, i + 1, "(", ")")
            out.append(raw[i:end])
            i = end
        elif c == "$" and (m := _VAR.match(raw, i)):
            name, default = m[1] or m[3], m[2]
            out.append(env[name] if name in env else expand(default, env) if default is not None else m[0])
            i = m.end()
        else:
            out.append(c)
            i += 1
    return "".join(out)


@dataclass
class Script:
    """What reading a script's statements in order leaves behind: variables, arrays, the train line."""

    base_dir: Path | None
    conf_dir: Path
    env: dict[str, str] = field(default_factory=dict)
    arrays: dict[str, list[str]] = field(default_factory=dict)
    train: tuple[str, list[str]] | None = None  # (train.py | train_async.py, the words after it)
    model: str | None = None
    unresolved: list[Unmapped] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def words(self, raws: list[str]) -> list[str]:
        """Expanded words; `${ARR[@]}` splices the array."""
        out = []
        for raw in raws:
            m = _ARRAY_REF.fullmatch(raw)
            if m and m[1] not in self.arrays:
                self.notes.append(f"${{{m[1]}[@]}} is used but never defined; it adds no flags")
            out += self.arrays.get(m[1], []) if m else [expand(raw, self.env)]
        return out

    def read(self, text: str, depth: int = 0) -> None:
        for statement in lex(text):
            self.statement(statement, depth)

    def statement(self, words: list[str], depth: int) -> None:
        while words and words[0] in ("then", "else", "do", "{", "export"):
            words = words[1:]  # statements inside if/for blocks, and exported assignments, count too
        if len(words) >= 2 and (m := re.fullmatch(r"([A-Za-z_]\w*)(\+?)=", words[0])) and words[1] == "(":
            close = words.index(")", 2) if ")" in words[2:] else len(words)
            items = self.words(words[2:close])
            self.arrays[m[1]] = (self.arrays.get(m[1], []) if m[2] else []) + items
            return
        while words and (m := re.fullmatch(r"([A-Za-z_]\w*)=(.*)", words[0], re.S)):
            value = expand(m[2], self.env)
            if "$(" in value:
                self.env.pop(m[1], None)  # a command's output: unknown here
            else:
                self.env[m[1]] = value
            words = words[1:]
        if not words:
            return
        if words[0] in ("source", ".") and len(words) > 1:
            self.source(expand(words[1], self.env), depth)
            return
        names = [Path(expand(w, self.env)).name for w in words]
        for script in ("train.py", "train_async.py"):
            if script in names:
                if self.train is not None:
                    self.notes.append(f"more than one train line; used the last ({script})")
                self.train = (script, self.words(words[names.index(script) + 1 :]))

    def source(self, path: str, depth: int) -> None:
        """Read a sourced file (a leading unknown variable such as ${SCRIPT_DIR} means base_dir); a models
        file that is not found still names the model group when conf/model/<name>.yaml exists."""
        rel = re.sub(r"^\$\{?\w+\}?/", "", path)
        file = Path(rel)
        if not file.is_absolute() and self.base_dir is not None:
            file = self.base_dir / file
        stem = Path(rel).name.removesuffix(".sh")
        if (self.conf_dir / "model" / f"{stem}.yaml").is_file():
            self.model = stem
        if "$" not in rel and file.is_file() and depth < 8:
            self.read(file.read_text(), depth + 1)
        elif self.model != stem:
            where = f"conf/model/{stem}.yaml does not exist either"
            self.unresolved.append(Unmapped("source", (path,), "unresolved", f"file not found; {where}"))
