"""Reading the bash of Miles/slime launch scripts: statements, words, variables, arrays, `source`, and the train line.

`lex` splits the text into statements of raw words; `Script` runs them as far as they compute words (assignments,
`source`, `if`, `for`, the train line), with `rlpipe.config.miles.expansion` expanding each word as bash would;
what it cannot follow is reported, never guessed.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rlpipe.config.miles.expansion import (
    MISSING,
    ExpansionError,
    Variables,
    arithmetic,
    arithmetic_assign,
    closing,
    closing_dquote,
    expand_word,
    expand_words,
    missing_names,
    printf,
    show_missing,
)
from rlpipe.config.miles.flags import Unmapped


class BashSyntaxError(ValueError):
    """The script uses bash this reader does not follow (an unclosed quote or substitution)."""


def _line_of(text: str, i: int) -> int:
    return text.count("\n", 0, i) + 1


def _scan(scanner: Callable[..., int], text: str, i: int, *args: str) -> int:
    """One of the expander's scanners (`closing`, `closing_dquote`) over the whole script, its error said with the
    line it started on."""
    try:
        return scanner(text, i, *args)
    except ExpansionError:
        what = "double quote" if scanner is closing_dquote else f"`{args[0]}`"
        raise BashSyntaxError(f"unclosed {what} from line {_line_of(text, i)}") from None


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
            end = _scan(closing_dquote, text, i)
            buf.append(text[i:end])
            i = end
        elif c == "$" and text.startswith(("(", "{"), i + 1):
            end = _scan(closing, text, i + 1, text[i + 1], ")" if text[i + 1] == "(" else "}")
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
        elif text.startswith("<<", i) and not text.startswith("<<<", i):
            i = _skip_heredoc(text, i)  # the body is another program's input (python3 - <<EOF ...), not bash
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


def _skip_heredoc(text: str, i: int) -> int:
    """Index after the heredoc starting at text[i] (`<<WORD`, `<<-'WORD'`): the redirection, the rest of its line
    and the body up to the line that is WORD are dropped; the words before `<<` stay the command's."""
    m = re.compile(r"<<(-?)\s*(['\"]?)([A-Za-z_]\w*)\2").match(text, i)
    if not m:
        return i + 2
    line_end = text.find("\n", m.end())
    if line_end < 0:
        return len(text)
    strip = m[1] == "-"
    k = line_end + 1
    while k < len(text):
        end = text.find("\n", k)
        line = text[k : end if end >= 0 else len(text)]
        if (line.lstrip("\t") if strip else line) == m[3]:
            return k + len(line)  # the newline after the terminator ends the command's statement
        k = len(text) if end < 0 else end + 1
    return len(text)


_ASSIGNMENT = re.compile(r"([A-Za-z_]\w*)(\+?)=(.*)", re.S)
_DECLARATIONS = ("export", "declare", "local", "readonly", "typeset")
_BLOCK_OPEN = {"if": "fi", "for": "done", "while": "done", "until": "done", "case": "esac"}
_BLOCK_CLOSE = frozenset(_BLOCK_OPEN.values())


@dataclass
class Script:
    """Reading a launch script's statements in order, as bash would run them for the words they compute:
    assignments (scalars, arrays, `+=`, `printf -v`, `export`/`declare`/`local`), `source`, `if`/`elif`/`else`
    on the tests scripts use (`[ -z ... ]`, `=`, `-eq`, ...), `for x in ...` loops, and the train line. Other
    commands (`ray start`, `pkill`, `sleep`) are not run: they compute no words.

    What it leaves behind: the variables, the train line's words, and what it could not follow: `missing`
    (variables with no value the train line uses, name -> a flag using it), `unresolved` and `notes`."""

    base_dir: Path | None
    conf_dir: Path
    given: dict[str, str] = field(default_factory=dict)  # the environment it runs in (and --set NAME=VALUE)
    script_path: Path | None = None
    source_dirs: tuple[Path, ...] = ()  # where a sourced file missing at its path is looked for, by file name
    variables: Variables = field(init=False)
    train: tuple[str, list[str]] | None = None  # (train.py | train_async.py, the words after it)
    model: str | None = None
    functions: dict[str, list[list[str]]] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)  # marker token -> the word rlpipe could not compute
    printed_by: dict[str, str] = field(default_factory=dict)  # variable -> the command whose output it holds
    missing: dict[str, str] = field(default_factory=dict)
    unresolved: list[Unmapped] = field(default_factory=list)
    lost_sources: list[str] = field(default_factory=list)  # sourced files found nowhere
    train_undefined: list[str] = field(default_factory=list)  # arrays the train line uses that nothing defined
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        cwd = self.base_dir if self.base_dir is not None else Path.cwd()
        self.variables = Variables(dict(self.given), {}, self.script_path, cwd)

    @property
    def arrays(self) -> dict[str, list[str]]:
        return self.variables.arrays

    def read(self, text: str, depth: int = 0) -> None:
        self.run(lex(text), depth)

    # ------------------------------------------------------------------------------------ control flow
    def run(self, statements: list[list[str]], depth: int) -> None:
        i = 0
        while i < len(statements):
            words = statements[i]
            head = words[0]
            if head == "if":
                i = self._if(statements, i, depth)
            elif head == "for":
                i = self._for(statements, i, depth)
            elif _is_function(words):
                end = _block_end(statements, i)
                self.functions[_function_name(words)] = _function_body(statements[i : end + 1])
                i = end + 1
            elif head in _BLOCK_OPEN:
                end = _block_end(statements, i)
                self.notes.append(f"skipped a `{' '.join(words[:3])} ...` block (its words are not read)")
                i = end + 1
            else:
                self.statement(words, depth)
                i += 1

    def _if(self, statements: list[list[str]], i: int, depth: int) -> int:
        """Run the branch whose test holds; an undecidable test takes its own branch, with a note."""
        end = _block_end(statements, i)
        branches = _branches(statements[i : end + 1])
        for condition, body in branches:
            verdict = True if condition is None else self.test(condition)
            if verdict is None:
                self.notes.append(f"could not decide `{' '.join(condition or [])}`; read its branch")
            if verdict is None or verdict:
                self.run(body, depth)
                break
        return end + 1

    def _for(self, statements: list[list[str]], i: int, depth: int) -> int:
        end = _block_end(statements, i)
        header, body = _loop_parts(statements[i : end + 1])
        if len(header) >= 3 and header[2] == "in":
            for value in self.expand(header[3:]):
                self.variables.scalars[header[1]] = value
                self.run(body, depth)
        elif header[1:3] == ["(", "("]:
            self._arithmetic_for([w for w in header[3:] if w != ")"], body, depth)
        else:
            self.notes.append(f"skipped a `{' '.join(header)}` loop (only `for x in ...` and `for ((...))` are read)")
        return end + 1

    def _arithmetic_for(self, parts: list[str], body: list[list[str]], depth: int) -> None:
        """for ((init; condition; step)): the three parts are words here (the lexer dropped the `;`s)."""
        if len(parts) != 3:
            self.notes.append(f"skipped a `for (( {' '.join(parts)} ))` loop it could not read")
            return
        init, condition, step = parts
        try:
            arithmetic_assign(init, self.variables)
            for _ in range(MAX_LOOP):
                if not arithmetic(condition, self.variables):
                    return
                self.run(body, depth)
                arithmetic_assign(step, self.variables)
        except ExpansionError as err:
            self.notes.append(f"stopped a `for (( {' '.join(parts)} ))` loop: {err}")
            return
        self.notes.append(f"stopped a `for (( {' '.join(parts)} ))` loop after {MAX_LOOP} rounds")

    def test(self, words: list[str]) -> bool | None:
        """A `[ ... ]` / `[[ ... ]]` / `test ...` condition, where it can be decided from the variables alone."""
        if words[:2] == ["(", "("] and words[-2:] == [")", ")"]:  # (( arithmetic ))
            try:
                return arithmetic(" ".join(words[2:-2]), self.variables) != 0
            except ExpansionError:
                return None
        words = [w for w in words if w not in ("[", "]", "[[", "]]", "test")]
        negate = bool(words) and words[0] == "!"
        words = words[1:] if negate else words
        try:
            args = [self.expand_one(w) for w in words]
        except ExpansionError:
            return None
        if any(MISSING in a for a in args):
            return None
        verdict: bool | None = None
        if len(args) == 2 and args[0] in ("-z", "-n"):
            verdict = (args[1] == "") == (args[0] == "-z")
        elif len(args) == 3 and args[1] in ("=", "==", "!="):
            verdict = (args[0] == args[2]) == (args[1] != "!=")
        elif len(args) == 3 and args[1] in _NUMERIC and all(re.fullmatch(r"-?\d+", a) for a in (args[0], args[2])):
            verdict = _NUMERIC[args[1]](int(args[0]), int(args[2]))
        elif len(args) == 1:
            verdict = args[0] != ""
        return verdict if verdict is None or not negate else not verdict

    # ---------------------------------------------------------------------------------------- statements
    def statement(self, words: list[str], depth: int) -> None:
        while words and words[0] in ("then", "else", "do", "{", "}"):
            words = words[1:]
        if words and words[0] in _DECLARATIONS:
            words = [w for w in words[1:] if not w.startswith("-")]
        if not words:
            return
        if len(words) >= 2 and (m := re.fullmatch(r"([A-Za-z_]\w*)(\+?)=", words[0])) and words[1] == "(":
            close = words.index(")", 2) if ")" in words[2:] else len(words)
            items = self.expand(words[2:close])
            self.arrays[m[1]] = (self.arrays.get(m[1], []) if m[2] else []) + items
            self.variables.scalars.pop(m[1], None)
            return
        while words and (m := _ASSIGNMENT.fullmatch(words[0])):
            self.assign(m[1], m[3], append=bool(m[2]))
            words = words[1:]
        if not words:
            return
        if words[0] == "unset":
            for name in words[1:]:
                self.variables.scalars.pop(name, None)
                self.arrays.pop(name, None)
        elif words[0] == "printf" and len(words) > 3 and words[1] == "-v":
            self.variables.scalars[words[2]] = printf(self.expand_one(words[3]), self.expand(words[4:]))
        elif (words[0] in ("set", "shift") and words[1:2] == ["--"]) or words[0] == "shift":
            self.variables.positional = self.expand(words[2:]) if words[0] == "set" else self.variables.positional[1:]
        elif words[0] in ("source", ".") and len(words) > 1:
            self.source(self.expand_one(words[1]), depth)
        elif words[0] == "read" and any(w.startswith("-") and "a" in w for w in words[1:]):
            self.read_array(words[1:])
        else:
            self.command(words, depth)

    def read_array(self, words: list[str]) -> None:
        """`read -ra NAME <<< "$LINE"` (Miles' HEAD scripts read their model flags so): NAME becomes the here-string
        split on whitespace; a line rlpipe cannot compute stays one unknown word, asked for by its variable."""
        options, rest = [w for w in words if w.startswith("-")], [w for w in words if not w.startswith("-")]
        name = next((w for w in rest if re.fullmatch(r"[A-Za-z_]\w*", w)), None)
        feed = [w.lstrip("<") for w in rest[rest.index(name) + 1 :] if w.lstrip("<")] if name else []
        if name is None or not feed or any("a" in o and o.index("a") < len(o) - 1 for o in options):
            self.notes.append(f"skipped `read {' '.join(words)}` (only `read -ra NAME <<< WORD` is followed)")
            return
        line = self.expand_one(feed[0])
        self.arrays[name] = line.split()
        self.variables.scalars.pop(name, None)

    def assign(self, name: str, raw: str, append: bool) -> None:
        """NAME=value (NAME+=value appends); a value that needs a command rlpipe does not run is unknown."""
        try:
            value = expand_word(raw, self.variables)
        except ExpansionError as err:
            if name in self.given:  # the user gave what the command would print (--set NAME=VALUE)
                self.variables.scalars[name] = self.given[name]
                return
            self.notes.append(f"{name} is unknown: {err}")
            self.printed_by[name] = raw
            value = f"{MISSING}{name}{MISSING}"  # asked for by name: --set NAME=VALUE
        self.variables.scalars[name] = (self.variables.scalar(name) or "") + value if append else value

    def command(self, words: list[str], depth: int = 0) -> None:
        """Any other command: the train line is the only one that matters (its words are the flags); a function
        the script defined runs its body, with its arguments as $1, $2, ..."""
        if _plain(words[0]) in self.functions and depth < 8:
            saved = self.variables.positional
            self.variables.positional = self.expand(words[1:])
            self.run(self.functions[_plain(words[0])], depth + 1)
            self.variables.positional = saved
            return
        names = [Path(_plain(w)).name for w in words]
        script = next((name for name in names if _TRAIN_SCRIPT.fullmatch(name)), None)
        if script is None:
            return
        if self.train is not None:
            self.notes.append(f"more than one train line; used the last ({script})")
        self.variables.undefined_arrays.clear()
        flags = self.expand(words[names.index(script) + 1 :])
        self.train = (script, flags)
        self.missing = {}
        for word in flags:
            for name in missing_names(word):
                self.missing.setdefault(self.failed.get(name, name), show_missing(word, self.failed))
        self.train_undefined = sorted(self.variables.undefined_arrays)
        self.notes += [f"${{{name}[@]}} is used but never defined; it adds no flags" for name in self.train_undefined]

    def expand(self, raws: list[str]) -> list[str]:
        out = []
        for raw in raws:
            try:
                out += expand_words(raw, self.variables)
            except ExpansionError as err:
                self.notes.append(str(err))
                out.append(self.unknown(raw))
        return out

    def unknown(self, raw: str) -> str:
        """A marker for a word rlpipe cannot compute (it needs a command rlpipe does not run): one token, no
        spaces, so splitting never cuts it; `failed` keeps the word's text for messages."""
        token = f"word{len(self.failed) + 1}"
        self.failed[token] = raw
        return f"{MISSING}{token}{MISSING}"

    def expand_one(self, raw: str) -> str:
        return expand_word(raw, self.variables)

    def source(self, path: str, depth: int) -> None:
        """Read a sourced file, relative to the script's folder when relative (a path still holding an unknown
        variable, such as ${SCRIPT_DIR} without a value, is taken from the script's folder too); a models file
        that is not found still names the model group when conf/model/<name>.yaml exists."""
        rel = re.sub(f"^{MISSING}[^{MISSING}]*{MISSING}/", "", path)
        file = Path(rel)
        if not file.is_absolute() and self.base_dir is not None:
            file = self.base_dir / file
        stem = Path(rel).name.removesuffix(".sh")
        if not file.is_file() and MISSING not in rel:
            file = next((d / file.name for d in self.source_dirs if (d / file.name).is_file()), file)
        if (self.conf_dir / "model" / f"{stem}.yaml").is_file():
            self.model = stem
        if MISSING not in rel and file.is_file() and depth < 8:
            self.read(file.read_text(), depth + 1)
        elif self.model != stem:
            where = f"conf/model/{show_missing(stem)}.yaml does not exist either"
            self.unresolved.append(Unmapped("source", (show_missing(path),), "unresolved", f"file not found; {where}"))
            self.lost_sources.append(show_missing(path))


_NUMERIC = {
    "-eq": lambda a, b: a == b, "-ne": lambda a, b: a != b, "-lt": lambda a, b: a < b,
    "-le": lambda a, b: a <= b, "-gt": lambda a, b: a > b, "-ge": lambda a, b: a >= b,
}  # fmt: skip


def _plain(raw: str) -> str:
    """A word with its quotes removed and nothing expanded (to spot `train.py` wherever it stands)."""
    return raw.replace('"', "").replace("'", "")


_TRAIN_SCRIPT = re.compile(r"train(_\w+)?\.py")  # train.py, train_async.py, train_multi_lora_async.py, ...
MAX_LOOP = 100_000


def _function_name(words: list[str]) -> str:
    return words[1] if words[0] == "function" else words[0]


def _function_body(block: list[list[str]]) -> list[list[str]]:
    """A function's statements without the `name() {` header and the closing `}`."""
    first = list(block[0])
    first = first[first.index("{") + 1 :] if "{" in first else []
    body = [first, *[list(w) for w in block[1:]]]
    if body[-1][-1:] == ["}"]:
        body[-1] = body[-1][:-1]
    return [words for words in body if words]


def _is_function(words: list[str]) -> bool:
    """`function name ...` or `name() ...` (not `NAME=()`, an empty array)."""
    named = re.fullmatch(r"[A-Za-z_][\w-]*", words[0]) is not None
    return words[0] == "function" or (named and len(words) >= 3 and words[1:3] == ["(", ")"])


def _block_end(statements: list[list[str]], i: int) -> int:
    """Index of the statement that closes the block statements[i] opens (nested blocks counted)."""
    depth = 0
    for k in range(i, len(statements)):
        for word in statements[k]:
            if word in _BLOCK_OPEN or word == "{":
                depth += 1
            elif word in _BLOCK_CLOSE or word == "}":
                depth -= 1
                if depth == 0:
                    return k
    raise BashSyntaxError(f"`{' '.join(statements[i][:3])} ...` is never closed")


def _branches(block: list[list[str]]) -> list[tuple[list[str] | None, list[list[str]]]]:
    """An if block (its statements, `if` to `fi`) as (condition words, body statements) per branch; else: None."""
    branches: list[tuple[list[str] | None, list[list[str]]]] = []
    condition: list[str] | None = []
    body: list[list[str]] = []
    in_condition, depth = True, 0
    for words in block:
        head, rest = words[0], words[1:]
        if depth == 0 and head in ("if", "elif"):
            if head == "elif":
                branches.append((condition, body))
            condition, body, in_condition = list(rest), [], True
            continue
        if depth == 0 and head == "else":
            branches.append((condition, body))
            condition, body, in_condition = None, [], False
            words = rest
        elif depth == 0 and head == "then":
            in_condition = False
            words = rest
        if depth == 0 and words and words[-1] == "fi" and words is block[-1]:
            words = words[:-1]
        depth += sum(w in _BLOCK_OPEN for w in words) - sum(w in _BLOCK_CLOSE for w in words)
        if not words:
            continue
        if in_condition:
            condition = [*(condition or []), *words]
        else:
            body.append(words)
    branches.append((condition, body))
    return branches


def _loop_parts(block: list[list[str]]) -> tuple[list[str], list[list[str]]]:
    """A for block as (header words up to `do`, body statements up to `done`)."""
    header = list(block[0])
    body = [list(words) for words in block[1:]]
    if "do" in header:
        k = header.index("do")
        body.insert(0, header[k + 1 :])
        header = header[:k]
    if body and body[0][:1] == ["do"]:
        body[0] = body[0][1:]
    if body and body[-1][-1:] == ["done"]:
        body[-1] = body[-1][:-1]
    return header, [words for words in body if words]
