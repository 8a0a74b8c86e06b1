"""Bash word expansion, as far as launch scripts use it, without running a shell.

One raw word (quotes and `$` still in it, as `shell.lex` leaves it) becomes zero or more words, in bash's order:

    parameters   $X ${X} ${X:-default} ${X-d} ${X:=d} ${X:+alt} ${X:?msg} ${#X} ${X#p} ${X##p} ${X%p} ${X%%p}
                 ${X/p/r} ${X//p/r} ${ARR[@]} ${ARR[*]} ${ARR[n]} ${#ARR[@]} ${BASH_SOURCE[0]} $0; defaults nest
                 (`${A:-"${B}/x"}`) and are expanded only when used
    commands     $(...) for the commands launch scripts compute words with: seq, echo, printf, dirname, basename,
                 realpath, readlink -f, pwd and cd (the `$(cd "$(dirname ...)" && pwd)` idiom); any other command
                 is reported, never run
    arithmetic   $((...)) on integers: + - * / % ** << >> & | ^ ~ ! comparisons, && || ?:, parentheses, variables
    splitting    the results of unquoted expansions split on whitespace; "${ARR[@]}" gives one word per element
    quotes       removed ('...', "...", \\x)

A variable with no value is not guessed: its place in the word holds a marker (`MISSING`) naming it, so a caller can
list the variables a train line still needs (`missing_names`) and ask for them (`--set NAME=VALUE`).
"""

from __future__ import annotations

import ast
import fnmatch
import operator
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

MISSING = "\x00"  # MISSING + name + MISSING stands where a variable without a value was used
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SPECIAL = re.compile(r"[0-9@*#?]")  # $0 $1 ... $@ $* $# $?
_SPLICE = re.compile(r"\$@|\$\{(@|[A-Za-z_]\w*\[@\])\}")
_IFS = " \t\n"


class ExpansionError(ValueError):
    """A word uses bash this expander does not follow (an unknown command in $(...), bad arithmetic)."""


@dataclass
class Variables:
    """What a word can refer to: scalars, arrays, the script's own path (BASH_SOURCE / $0) and working folder."""

    scalars: dict[str, str] = field(default_factory=dict)
    arrays: dict[str, list[str]] = field(default_factory=dict)
    script: Path | None = None
    cwd: Path = field(default_factory=Path.cwd)
    undefined_arrays: set[str] = field(default_factory=set)  # "${A[@]}" read with no A defined
    positional: list[str] = field(default_factory=list)  # $1 $2 ... (a function's arguments)

    def scalar(self, name: str) -> str | None:
        """A name's value as bash reads `$name` (an array's first element), None when it has none."""
        if name in self.scalars:
            return self.scalars[name]
        if name in self.arrays:
            return self.arrays[name][0] if self.arrays[name] else ""
        if name == "0" and self.script is not None:
            return str(self.script)
        if name.isdigit() and name != "0":
            k = int(name) - 1
            return self.positional[k] if k < len(self.positional) else None
        if name == "#":
            return str(len(self.positional))  # a script is read as run with no arguments
        return None

    def elements(self, name: str) -> list[str] | None:
        if name in self.arrays:
            return list(self.arrays[name])
        if name == "BASH_SOURCE" and self.script is not None:
            return [str(self.script)]
        if name in ("@", "*"):
            return list(self.positional)
        value = self.scalar(name)
        return None if value is None else [value]


def missing_names(text: str) -> list[str]:
    """The variables without a value used in `text` (an expanded word), in order of first use."""
    return list(dict.fromkeys(re.findall(f"{MISSING}([^{MISSING}]*){MISSING}", text)))


def show_missing(text: str, failed: dict[str, str] | None = None) -> str:
    """`text` with each marker written back as `${NAME}` (or as the word rlpipe could not compute, from `failed`),
    for messages."""

    def back(m: re.Match[str]) -> str:
        return (failed or {}).get(m[1]) or f"${{{m[1]}}}"

    return re.sub(f"{MISSING}([^{MISSING}]*){MISSING}", back, text)


# --------------------------------------------------------------------------------------------- scanning
def closing(text: str, i: int, open_: str, close: str) -> int:
    """Index just past the `close` matching the `open_` at text[i], quotes, `${`, `$(` and escapes respected."""
    depth, j = 0, i
    while j < len(text):
        c = text[j]
        if c == "\\":
            j += 2
            continue
        if c == "'" and open_ != "{":  # inside ${...} a ' is a literal unless the word is quoted: rare, accept
            end = text.find("'", j + 1)
            j = len(text) if end < 0 else end + 1
            continue
        if c == '"':
            j = closing_dquote(text, j)
            continue
        depth += (c == open_) - (c == close)
        j += 1
        if depth == 0:
            return j
    raise ExpansionError(f"unclosed `{open_}` in {text!r}")


def closing_dquote(text: str, i: int) -> int:
    j = i + 1
    while j < len(text):
        if text[j] == "\\":
            j += 2
        elif text[j] == '"':
            return j + 1
        elif text.startswith("$(", j) or text.startswith("${", j):
            j = closing(text, j + 1, text[j + 1], ")" if text[j + 1] == "(" else "}")
        else:
            j += 1
    raise ExpansionError(f"unclosed double quote in {text!r}")


# ------------------------------------------------------------------------------------------- expansion
@dataclass
class _Fields:
    """Words being built: `quoted` text is kept whole, unquoted expansion results are split on whitespace."""

    split: bool = True  # False: the right side of an assignment, where bash splits nothing
    words: list[str] = field(default_factory=list)
    current: str = ""
    started: bool = False  # a quoted empty string still makes a word

    def add(self, text: str) -> None:
        self.current += text
        self.started = True

    def add_split(self, text: str) -> None:
        if not self.split:
            self.add(text)
            return
        parts = re.split(f"[{_IFS}]+", text)
        if len(parts) == 1:
            self.current += parts[0]
            self.started = self.started or bool(parts[0])
            return
        self.current += parts[0]
        self.end()
        for middle in parts[1:-1]:
            self.words.append(middle)
        self.current, self.started = parts[-1], bool(parts[-1])

    def add_words(self, items: list[str]) -> None:
        """Quoted "${ARR[@]}": the first joins the current word, the last starts the next, the rest stand alone."""
        if not items:
            return
        self.current += items[0]
        self.started = True
        for item in items[1:]:
            self.end()
            self.current, self.started = item, True

    def end(self) -> None:
        if self.started or self.current:
            self.words.append(self.current)
        self.current, self.started = "", False


def expand_words(raw: str, variables: Variables) -> list[str]:
    """A raw word as the words bash passes to a command (splitting applied)."""
    fields = _Fields()
    _expand_into(raw, variables, fields, quoted=False)
    fields.end()
    return fields.words


def expand_word(raw: str, variables: Variables) -> str:
    """A raw word as one string, without splitting (the right side of an assignment)."""
    fields = _Fields(split=False)
    _expand_into(raw, variables, fields, quoted=False)
    fields.end()
    return " ".join(fields.words)


def _expand_into(raw: str, variables: Variables, out: _Fields, quoted: bool) -> None:
    i = 0
    while i < len(raw):
        c = raw[i]
        if c == "\\":
            nxt = raw[i + 1 : i + 2]
            out.add(nxt if not quoted or nxt in '"\\$`' else c + nxt)
            i += 2
        elif c == "'" and not quoted:
            end = raw.find("'", i + 1)
            if end < 0:
                raise ExpansionError(f"unclosed single quote in {raw!r}")
            out.add(raw[i + 1 : end])
            i = end + 1
        elif c == '"' and not quoted:
            end = closing_dquote(raw, i)
            inner = raw[i + 1 : end - 1]
            _expand_into(inner, variables, out, quoted=True)
            if not _SPLICE.fullmatch(inner):  # "" is a word; "$@" / "${A[@]}" of nothing is none
                out.started = True
            i = end
        elif raw.startswith("$((", i):
            end = closing(raw, i + 1, "(", ")")
            value = str(arithmetic(raw[i + 3 : end - 2], variables))
            out.add(value) if quoted else out.add_split(value)
            i = end
        elif raw.startswith("$(", i):
            end = closing(raw, i + 1, "(", ")")
            value = command_output(raw[i + 2 : end - 1], variables)
            out.add(value) if quoted else out.add_split(value)
            i = end
        elif raw.startswith("${", i):
            end = closing(raw, i + 1, "{", "}")
            _parameter(raw[i + 2 : end - 1], variables, out, quoted)
            i = end
        elif c == "$" and (m := _NAME.match(raw, i + 1) or _SPECIAL.match(raw, i + 1)):
            _parameter(f"{m[0]}[@]" if m[0] in "@*" else m[0], variables, out, quoted)
            i = m.end()
        else:
            out.add(c)
            i += 1


_OPERATORS = (":-", ":=", ":+", ":?", "-", "=", "+", "?", "##", "#", "%%", "%", "//", "/")


def _parameter(body: str, variables: Variables, out: _Fields, quoted: bool) -> None:
    """${body}: a name, an optional [index], then an optional operator and its word."""
    if body.startswith("#") and len(body) > 1:  # a length
        name, index = _name_and_index(body[1:])
        items = variables.elements(name)
        value = str(len(items) if index in ("@", "*") and items is not None else len(variables.scalar(name) or ""))
        out.add(value)
        return
    name, index = _name_and_index(body)
    rest = body[len(name) + (len(index) + 2 if index is not None else 0) :]
    operator_ = next((op for op in _OPERATORS if rest.startswith(op)), None)
    if rest and operator_ is None:
        raise ExpansionError(f"${{{body}}}: this expansion is not one launch scripts use")
    word = rest[len(operator_) :] if operator_ else ""
    if index in ("@", "*"):
        items = variables.elements(name)
        if items is None:  # an array never defined is empty, as in bash (the caller may say so)
            variables.undefined_arrays.add(name)
            items = []
        if operator_ in (":-", "-") and not items:
            items = expand_words(word, variables)
        if quoted and index == "@":
            out.add_words(items)
        else:  # "${A[*]}" joins with the first character of IFS
            separator = (variables.scalar("IFS") if variables.scalar("IFS") is not None else " ")[:1]
            joined = (separator if quoted else " ").join(items)
            out.add(joined) if quoted else out.add_split(joined)
        return
    if index is not None:
        items = variables.elements(name) or []
        position = arithmetic(index, variables)
        value: str | None = items[position] if -len(items) <= position < len(items) else None
    else:
        value = variables.scalar(name)
    value = _operate(name, value, operator_, word, variables)
    out.add(value) if quoted else out.add_split(value)


def _name_and_index(body: str) -> tuple[str, str | None]:
    m = _NAME.match(body) or _SPECIAL.match(body)
    if not m:
        raise ExpansionError(f"${{{body}}}: not a parameter name")
    name = m[0]
    if body[len(name) : len(name) + 1] == "[":
        close = body.index("]", len(name))
        return name, body[len(name) + 1 : close]
    return name, None


def _operate(name: str, value: str | None, op: str | None, word: str, variables: Variables) -> str:
    """One ${name<op>word} given the parameter's value (None: unset)."""

    def arg() -> str:
        return expand_word(word, variables)

    if op is None:
        return _missing(name) if value is None else value
    if op in (":-", "-"):
        use_default = value is None or (op == ":-" and value == "")
        return arg() if use_default else value  # type: ignore[return-value]
    if op in (":=", "="):
        if value is None or (op == ":=" and value == ""):
            value = arg()
            variables.scalars[name] = value
        return value
    if op in (":+", "+"):
        present = value is not None and (op == "+" or value != "")
        return arg() if present else ""
    if op in (":?", "?"):
        if value is None or (op == ":?" and value == ""):
            return _missing(name)
        return value
    if value is None:
        return _missing(name)
    if op in ("#", "##", "%", "%%"):
        return _trim(value, arg(), op)
    pattern, _, replacement = word.partition("/")
    return _replace(value, expand_word(pattern, variables), expand_word(replacement, variables), op == "//")


def _trim(value: str, pattern: str, op: str) -> str:
    """${v#p} ${v##p} ${v%p} ${v%%p}: the shortest / longest prefix or suffix matching the glob, removed."""
    cuts = range(len(value) + 1)
    if op in ("#", "##"):
        order = cuts if op == "#" else reversed(cuts)
        return next((value[k:] for k in order if fnmatch.fnmatchcase(value[:k], pattern)), value)
    order = reversed(cuts) if op == "%" else cuts
    return next((value[:k] for k in order if fnmatch.fnmatchcase(value[k:], pattern)), value)


def _replace(value: str, pattern: str, replacement: str, every: bool) -> str:
    regex = fnmatch.translate(pattern).removeprefix("(?s:").removesuffix(")\\Z")
    return re.sub(regex, replacement.replace("\\", "\\\\"), value, count=0 if every else 1)


def _missing(name: str) -> str:
    return f"{MISSING}{name}{MISSING}"


# ------------------------------------------------------------------------------------------- arithmetic
_BINARY: dict[type, Callable[[int, int], int]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Pow: operator.pow,
    ast.LShift: operator.lshift, ast.RShift: operator.rshift, ast.BitAnd: operator.and_, ast.BitOr: operator.or_,
    ast.BitXor: operator.xor,
}  # fmt: skip
_COMPARE: dict[type, Callable[[int, int], bool]] = {
    ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge, ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
}  # fmt: skip


def arithmetic(text: str, variables: Variables) -> int:
    """$((text)) on integers: variables (with or without $) read as integers, an unset one as 0, as in bash."""
    expanded = expand_word(text, variables)
    if MISSING in expanded:
        raise ExpansionError(f"$(({show_missing(text)})) uses variables without a value: {missing_names(expanded)}")
    python = expanded.replace("&&", " and ").replace("||", " or ").replace("!", " not ").replace(" not =", "!=")
    python = _ternary(python)
    try:
        tree = ast.parse(python.strip() or "0", mode="eval")
        return int(_evaluate(tree.body, variables))
    except (SyntaxError, ValueError, TypeError, ZeroDivisionError) as err:
        raise ExpansionError(f"$(({text})): {err}") from None


def arithmetic_assign(text: str, variables: Variables) -> None:
    """An arithmetic statement of a `for ((...))` header: `i=0`, `i++`, `i--`, `i+=2`, `i-=2`, or an expression."""
    text = text.strip()
    if m := re.fullmatch(r"([A-Za-z_]\w*)(\+\+|--)", text):
        variables.scalars[m[1]] = str(int(variables.scalar(m[1]) or 0) + (1 if m[2] == "++" else -1))
    elif m := re.fullmatch(r"([A-Za-z_]\w*)\s*([-+*/]?)=\s*(.+)", text):
        value = arithmetic(m[3], variables)
        current = int(variables.scalar(m[1]) or 0)
        ops = {"": value, "+": current + value, "-": current - value, "*": current * value}
        variables.scalars[m[1]] = str(ops.get(m[2], current // value if value else 0))
    else:
        arithmetic(text, variables)


def _ternary(expr: str) -> str:
    """C's `a ? b : c` (lowest precedence, right-associative) as Python's `(b if a else c)`."""
    depth, question = 0, -1
    for k, c in enumerate(expr):
        depth += (c == "(") - (c == ")")
        if c == "?" and depth == 0:
            question = k
            break
    if question < 0:
        return expr
    depth, pending = 0, 0
    for k in range(question + 1, len(expr)):
        c = expr[k]
        depth += (c == "(") - (c == ")")
        if depth == 0 and c == "?":
            pending += 1
        elif depth == 0 and c == ":":
            if pending == 0:
                condition, yes, no = expr[:question], expr[question + 1 : k], expr[k + 1 :]
                return f"({_ternary(yes)} if ({condition}) else ({_ternary(no)}))"
            pending -= 1
    raise ValueError(f"`?` without `:` in {expr!r}")


def _evaluate(node: ast.AST, variables: Variables) -> int:
    if isinstance(node, ast.Constant) and isinstance(node.value, int):
        return node.value
    if isinstance(node, ast.Name):
        return int(variables.scalar(node.id) or 0)
    if isinstance(node, ast.UnaryOp):
        value = _evaluate(node.operand, variables)
        ops = {ast.USub: -value, ast.UAdd: value, ast.Invert: ~value, ast.Not: int(not value)}
        return ops[type(node.op)]
    if isinstance(node, ast.BinOp):
        left, right = _evaluate(node.left, variables), _evaluate(node.right, variables)
        if isinstance(node.op, ast.Div | ast.FloorDiv | ast.Mod):  # bash truncates toward zero
            quotient = abs(left) // abs(right) * (1 if (left >= 0) == (right >= 0) else -1)
            return quotient if isinstance(node.op, ast.Div | ast.FloorDiv) else left - quotient * right
        return _BINARY[type(node.op)](left, right)
    if isinstance(node, ast.BoolOp):
        values = [_evaluate(v, variables) for v in node.values]
        return int(all(values) if isinstance(node.op, ast.And) else any(values))
    if isinstance(node, ast.Compare) and len(node.ops) == 1:
        return int(
            _COMPARE[type(node.ops[0])](_evaluate(node.left, variables), _evaluate(node.comparators[0], variables))
        )
    if isinstance(node, ast.IfExp):
        return _evaluate(node.body if _evaluate(node.test, variables) else node.orelse, variables)
    raise ValueError(f"not integer arithmetic: {ast.unparse(node)}")


# ---------------------------------------------------------------------------------------------- commands
def command_output(text: str, variables: Variables) -> str:
    """What $(text) prints, for the commands launch scripts compute words with (see the module docstring); other
    commands are an ExpansionError naming them. The working folder a `cd` sets lasts for the substitution only."""
    from rlpipe.config.miles.shell import lex  # the statement splitter (shell imports this module)

    local = Variables(dict(variables.scalars), variables.arrays, variables.script, variables.cwd, set())
    local.positional = variables.positional
    printed = []
    for statement in lex(text):
        while statement and (m := re.fullmatch(r"([A-Za-z_]\w*)=(.*)", statement[0], re.S)):
            local.scalars[m[1]] = expand_word(m[2], local)  # IFS=', ' and the like, for this substitution
            statement = statement[1:]
        words = [w for raw in statement for w in expand_words(raw, local)]
        words = _without_redirections(words)
        if words:
            try:
                printed.append(_run(words, local))
            except (ValueError, IndexError, StopIteration) as err:
                raise ExpansionError(f"$({' '.join(words)}): {err or type(err).__name__}") from None
    return "".join(printed).rstrip("\n")


def _without_redirections(words: list[str]) -> list[str]:
    out, skip = [], False
    for word in words:
        if skip:
            skip = False
        elif re.fullmatch(r"[0-9&]?>>?|<", word):
            skip = True  # the operator's target follows
        elif not re.fullmatch(r"[0-9&]?>>?\S*|<\S*|[0-9]>&[0-9]", word):
            out.append(word)
    return out


def _run(words: list[str], variables: Variables) -> str:
    name, args = words[0], [a for a in words[1:] if a != "--"]
    if name == "echo":
        newline = "-n" not in args
        return " ".join(a for a in args if a not in ("-n", "-e")) + ("\n" if newline else "")
    if name == "printf":
        return printf(args[0], args[1:]) if args else ""
    if name == "seq":
        separator, numbers = "\n", []
        rest = iter(args)
        for arg in rest:
            if arg.startswith("-s"):
                separator = arg[2:] or next(rest)
            else:
                numbers.append(int(arg))
        first, step, last = (1, 1, numbers[0]) if len(numbers) == 1 else (numbers[0], 1, numbers[1])
        if len(numbers) == 3:
            first, step, last = numbers
        values = [str(k) for k in range(first, last + (1 if step > 0 else -1), step)]
        return separator.join(values) + "\n" if values else ""
    if name == "dirname":
        return f"{os.path.dirname(args[0].rstrip('/')) or '.'}\n"
    if name == "basename":
        base = os.path.basename(args[0].rstrip("/"))
        return f"{base.removesuffix(args[1]) if len(args) > 1 else base}\n"
    if name == "pwd":
        return f"{variables.cwd}\n"
    if name == "cd":
        target = Path(args[-1]) if args else Path.home()
        variables.cwd = Path(os.path.normpath(target if target.is_absolute() else variables.cwd / target))
        return ""
    if name in ("realpath", "readlink"):
        path = Path(next(a for a in args if not a.startswith("-")))
        return f"{os.path.normpath(path if path.is_absolute() else variables.cwd / path)}\n"
    if name == "true":
        return ""
    raise ExpansionError(f"$({' '.join(words)}) runs a command ({name}) rlpipe does not run; give the result")


def printf(fmt: str, args: list[str]) -> str:
    """bash's printf for the formats scripts use (%s %d %f %x with flags and widths, %% and \\n escapes); the
    format repeats while arguments remain, as in bash."""
    text = fmt.encode().decode("unicode_escape")
    specs = re.findall(r"%[-+ 0#]*\d*(?:\.\d+)?[sdifxXoeEgG%]", text)
    count = sum(1 for s in specs if s != "%%")
    if count == 0:
        return text.replace("%%", "%")
    out, rest = [], list(args)
    while True:
        chunk, rest = rest[:count], rest[count:]
        chunk += [""] * (count - len(chunk))
        values = iter(chunk)

        def one(spec: re.Match[str], values=values) -> str:
            s = spec[0]
            if s == "%%":
                return "%"
            value = next(values)
            if s[-1] in "di":
                return (s[:-1] + "d") % int(value or 0)
            if s[-1] in "xXo":
                return s % int(value or 0)
            if s[-1] in "feEgG":
                return s % float(value or 0)
            return s % value

        out.append(re.sub(r"%[-+ 0#]*\d*(?:\.\d+)?[sdifxXoeEgG%]", one, text))
        if not rest:
            return "".join(out)
