"""Where each ``${var}`` of a job script lands, in the shell's own terms.

The trigger never pastes a value into a script: ``${var}`` becomes a reference to the
job's environment variable, and the shell never re-reads the result of a parameter
expansion as code. A reference alone is not enough where the shell, or a command the
script runs, reads the text again as code (``eval``, ``bash -c``, ``ssh``, arithmetic,
a here-document fed to a shell...) or never expands it (single quotes, a quoted
here-document). This module finds, for every template variable of a script, which of
these it is, so that the pipeline can be refused when it loads.

Written by hand, on purpose: bashlex 0.18 (the last release, 2023) raises
NotImplementedError on ``$(( ))`` and ``case`` patterns and fails on ``[[ ]]`` and
arrays, all of which job scripts use; tree-sitter-bash is a native extension (one more
binary wheel in the Lambda package) that recovers from what it does not understand
(two here-documents on one line parse as an ERROR and the second body as commands),
where this check must refuse rather than guess. The scanner reads only what decides
quoting and re-reading: quotes, escapes, comments, ``$( )``, backticks, ``${ }``,
arithmetic, here-documents, ``case``, ``[[ ]]``, arrays, and the words of each simple
command. Whatever it cannot tell is refused, never waved through.
"""
from __future__ import annotations

import bisect
import posixpath
import re
import shlex
from dataclasses import dataclass, field
from typing import Callable, Iterable

# The template grammar, shared with templating's string.Template: ${name} with a
# lower-case name is a variable, $${name} an escape for a literal ${name}.
PATTERN = r"""
\$(?:
  (?P<escaped>\$(?=\{[a-z][a-z0-9_]*\}))  |  # $${name} -> ${name}
  \{(?P<braced>[a-z][a-z0-9_]*)\}         |  # ${name}
  (?P<named>(?!x)x)                       |  # never: $name stays shell
  (?P<invalid>(?!x)x)
)
"""
TEMPLATE = re.compile(PATTERN, re.VERBOSE)
_NAME_PREFIX = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\[|\+?=)")
_ASSIGN_START = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?=\[|\+?=)")
_REDIRECT = re.compile(r"(?:[0-9]+|\{[A-Za-z_][A-Za-z0-9_]*\})?(<<<|<<-|<<|<>|<&|>&|>>|>\||&>>|&>|<|>)")
_PARAM_NAME = re.compile(r"[#!]?(?:[A-Za-z_][A-Za-z0-9_]*|[0-9]+|[@*#?$!0-])")
_PARAM_OPS = (":-", ":=", ":+", ":?", "##", "%%", "//", "/#", "/%", "^^", ",,", "-", "=", "+", "?", "#", "%", "/", "^", ",", "@", ":")
_DEFAULT_OPS = frozenset({":-", ":=", ":+", ":?", "-", "=", "+", "?"})
_PATTERN_OPS = frozenset({"##", "#", "%%", "%"})
_WORD_END = frozenset(" \t\n;&|<>()")
_RESET_WORDS = frozenset({"if", "then", "else", "elif", "fi", "do", "done", "while", "until", "!", "{", "}", "time", "in"})
_ARITH_TESTS = frozenset({"-eq", "-ne", "-lt", "-le", "-gt", "-ge"})
# Variables whose value is code, or says where code is loaded from: a value may not be
# assigned to them (bash runs PS4 under set -x, sources BASH_ENV, perl obeys PERL5OPT...).
CODE_VARIABLES = frozenset({
    "PS1", "PS2", "PS3", "PS4", "PROMPT_COMMAND", "BASH_ENV", "ENV", "SHELLOPTS", "BASHOPTS", "PATH", "CDPATH",
    "LD_PRELOAD", "LD_LIBRARY_PATH", "LD_AUDIT", "PYTHONPATH", "PYTHONSTARTUP", "PYTHONHOME", "PERL5OPT",
    "PERL5LIB", "PERLLIB", "RUBYOPT", "RUBYLIB", "NODE_OPTIONS", "NODE_PATH", "GIT_SSH_COMMAND", "PAGER", "EDITOR",
})
# Variables bash evaluates as arithmetic when assigned (besides those declared -i).
INTEGER_VARIABLES = frozenset({"RANDOM", "SRANDOM", "OPTIND", "HISTCMD"})
_INTEGER_DECLARATION = re.compile(
    r"(?<![^\s;&|(){}])(?:declare|typeset|local|export|readonly)((?:[ \t]+[-+][A-Za-z]+)+)"
    r"((?:[ \t]+[A-Za-z_][A-Za-z0-9_]*(?:=[^\s;&|]*)?)+)")
# Programs that can run a command from an option (sed -e 'e cmd', perl -e, tar
# --use-compress-program, sort --compress-program, rsync -e, scp -oProxyCommand, git
# --upload-pack, make --eval, env -S, man -P, vim -c...): a value at the start of one of
# their arguments is refused when it renders if it starts with "-" (see Placement.option).
OPTION_CODE = frozenset({
    "sed", "gsed", "perl", "ruby", "awk", "gawk", "mawk", "nawk", "tar", "gtar", "bsdtar", "sort", "gsort", "rsync",
    "scp", "sftp", "git", "make", "gmake", "zip", "man", "less", "more", "vi", "vim", "nvim", "view", "emacs", "wget",
    "env", "xargs", "find", "julia", "php", "lua", "luajit", "Rscript", "R", "octave", "gnuplot",
    "printf",  # its format only: printf -v 'a[$(cmd)]' runs cmd
})
# Where a value may stand first in a word: after quotes and shell defaults (${X:-...}) only.
_WORD_OPENING = re.compile(r"""(?:["']|\$\{[A-Za-z_][A-Za-z0-9_]*:?[-=+])*\Z""")
_SBATCH_LINE = re.compile(r"#SBATCH\b")
POSIX_SHELLS = frozenset({"sh", "bash", "dash", "ksh", "ksh93", "mksh", "zsh", "ash", "yash"})
_SHELLS = POSIX_SHELLS | {"fish", "csh", "tcsh"}
_PYTHON = re.compile(r"(python|pypy)[0-9.]*")
_C_OPTION = re.compile(r"-[A-Za-z]*c[A-Za-z]*")
_EMPTY_PARENS = re.compile(r"\(\s*\)")
_LONG_ATTACHED = re.compile(r"(--[A-Za-z0-9][A-Za-z0-9-]*)=")
_SHORT_ATTACHED = re.compile(r"-([A-Za-z])[^-]")
_ESAC = re.compile(r"esac(?=[\s;&|)]|\Z)")
# Commands that run the command after them: a program is judged after these too.
_WRAPPERS = frozenset({"sudo", "env", "nohup", "timeout", "nice", "exec", "command", "builtin", "time", "srun",
                       "stdbuf", "setsid", "ionice", "chrt", "taskset", "numactl", "mpirun", "mpiexec", "xargs",
                       "strace", "valgrind", "doas", "chroot", "unshare", "nsenter", "-exec", "-execdir", "-ok"})


@dataclass
class Placement:
    """One ``${name}`` of the script and what the shell does with it there."""

    name: str
    start: int
    end: int
    line: int
    context: str  # where it landed, in words a pipeline author knows
    quote: bool  # render as "${ENV}" (a word of its own) or ${ENV} (already inside quotes)
    refused: str = ""  # why no reference can stand here ("" = it can)
    numeric_ok: bool = False  # refused only because the text is code: a number is safe there
    option: str = ""  # it starts an argument of this program, which reads a value "-..." as an option


@dataclass
class Scan:
    placements: list[Placement]
    escapes: list[int]  # where "$${name}" loses its first "$"
    problems: list[str]  # the script is not shell we can read (unterminated quote...)


@dataclass
class _Word:
    start: int
    raw: str
    lit: str | None  # its value after quote removal, when no expansion builds it
    first: int  # placements inside (nested ones too): [first, last)
    last: int

    @property
    def dash(self) -> bool:
        """It may be an option: its value starts with "-" or, if the shell builds it, may."""
        return (self.lit or self.raw.lstrip("\"'")).startswith("-")


@dataclass
class _Command:
    first: int
    last: int = 0
    words: list[_Word] = field(default_factory=list)
    stdin: list[_Word] = field(default_factory=list)  # `< file` and `<<< word`
    writes: list[str] = field(default_factory=list)  # the files its output goes to (`> f`, `>> f`, `tee f`)
    reads_code: str = ""  # this command runs its standard input as code (which program)
    feeds_code: str = ""  # ... or a later stage of its pipeline does


@dataclass
class _Heredoc:
    delimiter: str
    strip_tabs: bool
    quoted: bool
    command: _Command


def scan(text: str) -> Scan:
    """Every template variable of ``text`` with its context (see ``Placement``)."""
    scanner = _Scanner(text)
    scanner.run()
    seen = {p.start for p in scanner.places}
    for start in scanner.templates.keys() - seen:  # never reached: refuse rather than guess
        end, name = scanner.templates[start]
        scanner.places.append(Placement(name, start, end, scanner.line(start), "a place this check cannot read",
                                        False, "so it cannot tell what the shell does with it"))
    scanner.places.sort(key=lambda p: p.start)
    # "$${name}" is an escape wherever it stands, as in every other field
    return Scan(scanner.places, sorted(scanner.escaped), scanner.problems)


class _Scanner:
    def __init__(self, text: str) -> None:
        self.s = text
        self.n = len(text)
        self.places: list[Placement] = []
        self.problems: list[str] = []
        self.pending: list[_Heredoc] = []
        self.templates: dict[int, tuple[int, str]] = {}  # start -> (end, name)
        self.escaped: dict[int, int] = {}  # start of "$${name}" -> its end
        for m in TEMPLATE.finditer(text):
            if m.group("braced"):
                self.templates[m.start()] = (m.end(), m.group("braced"))
            else:
                self.escaped[m.start()] = text.index("}", m.end()) + 1
        self.starts = sorted(self.templates.keys() | self.escaped.keys())
        # variables declared integer anywhere (a function may declare what runs earlier)
        self.integers = set(INTEGER_VARIABLES)
        for m in _INTEGER_DECLARATION.finditer(text):
            if "i" in m.group(1):
                self.integers.update(re.findall(r"[A-Za-z_][A-Za-z0-9_]*(?==|\s|\Z)", m.group(2) + " "))
        self.written: dict[str, list[tuple[int, int]]] = {}  # file -> placements whose values were written to it

    # ------------------------------------------------------------------ helpers
    def line(self, pos: int) -> int:
        return self.s.count("\n", 0, pos) + 1

    def template(self, pos: int, context: str, quote: bool, refused: str = "") -> int | None:
        """The end of the template or escape at ``pos`` (recorded), None if none is there."""
        if pos in self.escaped:
            return self.escaped[pos]
        if pos not in self.templates:
            return None
        end, name = self.templates[pos]
        self.places.append(Placement(name, pos, end, self.line(pos), context, quote, refused))
        return end

    def refuse(self, first: int, last: int, why: str, numeric_ok: bool = False) -> None:
        for p in self.places[first:last]:  # the first reason stands, unless it let numbers through
            if not p.refused or (p.numeric_ok and not numeric_ok):
                p.refused, p.numeric_ok = why, numeric_ok

    def literal_templates(self, start: int, end: int, context: str, why: str = "") -> None:
        """Text the shell does not expand here: every template in it is refused (``why``)."""
        for pos in self.starts[bisect.bisect_left(self.starts, start) : bisect.bisect_left(self.starts, end)]:
            self.template(pos, context, False, why)

    def bounded(self, end: int, work: Callable[[], object]) -> None:
        saved, self.n = self.n, end
        try:
            work()
        finally:
            self.n = saved

    def run(self) -> None:
        interpreter = _shebang(self.s)
        self.list(0, None)
        if self.pending:
            self.problems.append(f"here-document {self.pending[0].delimiter!r} is never closed")
        if interpreter and interpreter not in POSIX_SHELLS:
            for p in self.places:
                p.refused, p.numeric_ok = f"in a script run by {interpreter}, not by a POSIX shell", False

    # ------------------------------------------------------------------ lists of commands
    def list(self, pos: int, stop: str | None) -> int:
        """Commands until ``stop`` (")" of $( ) or a subshell, "case" for a case item's
        body). Returns the position of what stopped it."""
        s = self.s
        cmd: _Command | None = None
        pipeline: list[_Command] = []

        def end_command() -> None:
            nonlocal cmd
            if cmd is not None:
                cmd.last = len(self.places)
                self.analyze(cmd)
                pipeline.append(cmd)
                cmd = None

        def end_pipeline() -> None:
            end_command()
            for k, c in enumerate(pipeline):  # `... | tee f` writes what the earlier stages print
                if c.words and c.words[0].lit == "tee" and k:
                    self.wrote([_file(w) for w in c.words[1:] if not w.dash], pipeline[0].first, c.first)
            feeds = ""
            for c in reversed(pipeline):
                feeds = c.reads_code or feeds
                c.feeds_code = feeds
                if feeds and not c.reads_code:  # its output is a later stage's code
                    self.refuse(c.first, c.last, f"in a command whose output {feeds} runs as code")
            pipeline.clear()

        while pos < self.n:
            c = s[pos]
            if c in " \t":
                pos += 1
            elif s.startswith("\\\n", pos):
                pos += 2
            elif c == "\n":
                end_pipeline()
                pos = self.heredocs(pos + 1)
            elif c == "#":
                pos = self.comment(pos)
            elif c == ")" and stop == ")":
                end_pipeline()
                return pos
            elif stop == "case" and s.startswith((";;", ";&"), pos):
                end_pipeline()
                return pos
            elif s.startswith(("&&", "||"), pos):
                end_pipeline()
                pos += 2
            elif c == "|":
                end_command()
                pos += 2 if s.startswith("|&", pos) else 1
            elif c in ";&" and not s.startswith(("&>", "&>>"), pos):
                end_pipeline()
                pos += 1
            elif c == "(":
                if cmd is not None and cmd.words and _EMPTY_PARENS.match(s, pos):  # f() { ...
                    pos = s.index(")", pos) + 1
                    cmd = None
                elif s.startswith("((", pos) and (cmd is None or not cmd.words):
                    first = len(self.places)
                    pos = self.arith(pos + 2, "))")
                    self.refuse(first, len(self.places), "in arithmetic (( ))", numeric_ok=True)
                else:
                    pos = self.list(pos + 1, ")") + 1
            elif c == ")":
                self.problems.append(f"line {self.line(pos)}: unexpected ')'")
                pos += 1
            elif not s.startswith(("<(", ">("), pos) and _REDIRECT.match(s, pos):
                cmd = cmd or _Command(len(self.places))
                pos = self.redirect(pos, cmd)
            else:
                at_start = cmd is None or not cmd.words
                cmd = cmd or _Command(len(self.places))
                name = _ASSIGN_START.match(s, pos) if at_start else None
                if name:  # NAME=value, NAME+=value, NAME[i]=value: still before the command
                    pos, word = self.word(pos, assignment=True)
                    self.code_variable(name.group(), word)
                    continue
                word_start = pos
                pos, word = self.word(pos, assignment=not at_start and cmd.words[0].lit in _DECLARATIONS)
                if at_start and word.lit in _RESET_WORDS:
                    continue
                if at_start and word.lit == "function":
                    pos, _ = self.word(self.blanks(pos))
                    cmd = None
                    continue
                if at_start and word.lit == "esac" and stop == "case":
                    end_pipeline()
                    return word_start
                if at_start and word.lit == "case":
                    pos = self.case(pos)
                    cmd = None
                    continue
                if at_start and word.lit == "[[":
                    pos = self.test(pos)
                    continue
                if at_start and word.lit in ("for", "select") and s.startswith("((", self.blanks(pos)):
                    first = len(self.places)
                    pos = self.arith(self.blanks(pos) + 2, "))")
                    self.refuse(first, len(self.places), "in arithmetic for (( ))", numeric_ok=True)
                    cmd = None
                    continue
                cmd.words.append(word)
        end_pipeline()
        return pos

    def code_variable(self, name: str, word: _Word) -> None:
        if name in CODE_VARIABLES:
            self.refuse(word.first, word.last, f"as the value of {name}, which is code or where code is found")
        elif name in self.integers:
            self.refuse(word.first, word.last, f"as the value of {name}, an integer variable that bash evaluates "
                        "as arithmetic", numeric_ok=True)

    def blanks(self, pos: int) -> int:
        while pos < self.n and (self.s[pos] in " \t" or self.s.startswith("\\\n", pos)):
            pos += 2 if self.s[pos] == "\\" else 1
        return pos

    def comment(self, pos: int) -> int:
        end = self.s.find("\n", pos, self.n)
        end = self.n if end < 0 else end
        if _SBATCH_LINE.match(self.s, pos) and (pos == 0 or self.s[pos - 1] == "\n"):
            self.literal_templates(pos, end, "an #SBATCH line", "which Slurm reads without a shell, so nothing there is "
                                   "expanded: set the pipeline's job fields (name, standard_output...) instead")
        else:
            self.literal_templates(pos, end, "a comment")
        return end

    def redirect(self, pos: int, cmd: _Command) -> int:
        m = _REDIRECT.match(self.s, pos)
        assert m
        op = m.group(1)
        pos = self.blanks(m.end())
        if op in ("<<", "<<-"):
            start = pos
            pos, word = self.word(pos)
            raw = self.s[start:pos]
            first = word.first
            self.refuse(first, len(self.places), "in a here-document's delimiter")
            self.pending.append(_Heredoc(re.sub(r"[\"'\\]", "", raw), op == "<<-", any(q in raw for q in "\"'\\"), cmd))
            return pos
        pos, word = self.word(pos)
        if op in ("<<<", "<"):
            cmd.stdin.append(word)
        elif op in (">", ">>", ">|", "&>", "&>>"):
            cmd.writes.append(_file(word))
        return pos

    def heredocs(self, pos: int) -> int:
        """The bodies of the here-documents started on the line that just ended."""
        pending, self.pending = self.pending, []
        for doc in pending:
            body = pos
            end = None
            while pos < self.n:
                eol = self.s.find("\n", pos, self.n)
                eol = self.n if eol < 0 else eol
                line = self.s[pos:eol]
                if (line.lstrip("\t") if doc.strip_tabs else line) == doc.delimiter:
                    end, pos = pos, min(eol + 1, self.n)
                    break
                pos = eol + 1
            if end is None:
                self.problems.append(f"here-document {doc.delimiter!r} is never closed")
                end = pos = self.n
            first = len(self.places)
            if doc.quoted:
                self.literal_templates(body, end, "a quoted here-document (<<'EOF')", "where the shell never expands it")
            else:
                self.bounded(end, lambda: self.heredoc_body(body))
            if doc.command.feeds_code or doc.command.reads_code:
                self.refuse(first, len(self.places),
                            f"in a here-document that {doc.command.reads_code or doc.command.feeds_code} runs as code")
            self.wrote(doc.command.writes, first, len(self.places))
        return pos

    def heredoc_body(self, pos: int) -> None:
        while pos < self.n:
            c = self.s[pos]
            if c == "\\":
                pos = self.backslash(pos, "$`\\\n", "an unquoted here-document")
            elif c == "$":
                pos = self.dollar(pos, "heredoc")
            elif c == "`":
                pos = self.backtick(pos)
            else:
                pos += 1

    # ------------------------------------------------------------------ words
    def word(self, pos: int, assignment: bool = False, ends: frozenset[str] = _WORD_END) -> tuple[int, _Word]:
        s = self.s
        start, first, plain = pos, len(self.places), True
        if assignment:  # NAME[subscript]=: the subscript of an indexed array is arithmetic
            m = _ASSIGN_START.match(s, pos)
            if m and s.startswith("[", m.end()):
                sub = len(self.places)
                pos = self.arith(m.end() + 1, "]")
                self.refuse(sub, len(self.places), "in an array subscript (arithmetic)", numeric_ok=True)
                plain = False
        if s.startswith(("<(", ">("), pos):
            pos = self.list(pos + 2, ")") + 1
            plain = False
        while pos < self.n:
            c = s[pos]
            if c in ends:
                if c == "(" and pos > start and s[pos - 1] in "@?*+!":  # extglob @(a|b)
                    pos = self.extglob(pos + 1)
                    plain = False
                    continue
                if c == "(" and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\[[^]]*\])?\+?=", s[start:pos]):
                    pos = self.array(pos + 1)  # NAME=( ... )
                    plain = False
                    continue
                break
            if c == "\\":
                pos = self.backslash(pos, None, "a bare word")
            elif c == "'":
                pos = self.single(pos)
            elif c == '"':
                pos = self.double(pos + 1)
            elif c == "$":
                pos = self.dollar(pos, "word")
            elif c == "`":
                pos = self.backtick(pos)
            else:
                pos += 1
        raw = s[start:pos]
        plain = plain and "$" not in raw and "`" not in raw  # also inside its quotes
        return pos, _Word(start, raw, _unquote(raw) if plain else None, first, len(self.places))

    def backslash(self, pos: int, escapable: str | None, context: str) -> int:
        """``\\x``: a template right after the backslash would be printed, not expanded."""
        nxt = self.s[pos + 1 : pos + 2]
        if escapable is not None and nxt not in escapable:
            return pos + 1
        end = self.template(pos + 1, f"{context}, after a backslash", False,
                            "where the shell prints it literally (write $${name} for a literal ${name})")
        return end or pos + 2

    def single(self, pos: int) -> int:
        end = self.s.find("'", pos + 1, self.n)
        if end < 0:
            self.problems.append(f"line {self.line(pos)}: unterminated single quote")
            end = self.n - 1
        self.literal_templates(pos + 1, end, "single quotes", "where the shell never expands it")
        return end + 1

    def ansi_c(self, pos: int) -> int:
        """``$'...'``: backslash escapes, no expansion."""
        i = pos + 2
        while i < self.n and self.s[i] != "'":
            i += 2 if self.s[i] == "\\" else 1
        if i >= self.n:
            self.problems.append(f"line {self.line(pos)}: unterminated $'")
        self.literal_templates(pos + 2, min(i, self.n), "$'...' quotes", "where the shell never expands it")
        return i + 1

    def double(self, pos: int) -> int:
        """After an opening ``"``; returns the position after the closing one."""
        while pos < self.n:
            c = self.s[pos]
            if c == '"':
                return pos + 1
            if c == "\\":
                pos = self.backslash(pos, '$`"\\\n', "double quotes")
            elif c == "$":
                pos = self.dollar(pos, "dq")
            elif c == "`":
                pos = self.backtick(pos)
            else:
                pos += 1
        self.problems.append("unterminated double quote")
        return pos

    def dollar(self, pos: int, ctx: str) -> int:
        s = self.s
        context, quote = _CONTEXTS[ctx]
        end = self.template(pos, context, quote)  # "$${name}" is the shell's own ${name}
        if end is not None:
            return end
        if s.startswith("$$", pos):
            return pos + 2 if pos + 1 not in self.escaped else pos + 1
        if s.startswith("$((", pos):
            first = len(self.places)
            end = self.arith(pos + 3, "))")
            self.refuse(first, len(self.places), "in arithmetic $(( ))", numeric_ok=True)
            return end
        if s.startswith("$(", pos):
            return self.list(pos + 2, ")") + 1
        if s.startswith("$[", pos):
            first = len(self.places)
            end = self.arith(pos + 2, "]")
            self.refuse(first, len(self.places), "in arithmetic $[ ]", numeric_ok=True)
            return end
        if s.startswith("${", pos):
            return self.param(pos + 2, ctx)
        if s.startswith("$'", pos) and ctx == "word":
            return self.ansi_c(pos)
        if s.startswith('$"', pos) and ctx == "word":
            return self.double(pos + 2)
        return pos + 1

    def param(self, pos: int, ctx: str) -> int:
        """Inside the shell's own ``${...}``: a value may stand as the word of a default
        (``${X:-...}``) or a pattern (``${X#...}``); a subscript or an offset is arithmetic."""
        s = self.s
        m = _PARAM_NAME.match(s, pos)
        pos = m.end() if m else pos
        if s.startswith("[", pos):
            first = len(self.places)
            pos = self.arith(pos + 1, "]")
            self.refuse(first, len(self.places), "in an array subscript (arithmetic)", numeric_ok=True)
        op = next((o for o in _PARAM_OPS if s.startswith(o, pos)), "")
        pos += len(op)
        allowed = op in _DEFAULT_OPS or (op in _PATTERN_OPS and ctx != "heredoc")
        inner = ("param-heredoc" if ctx == "heredoc" else "param") if allowed else "dq"
        first, depth = len(self.places), 0
        while pos < self.n:
            c = s[pos]
            if c == "}" and depth == 0:
                pos += 1
                break
            if c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
            if c == "\\":
                pos = self.backslash(pos, None, "${...}")
            elif c == "'" and ctx == "word":
                pos = self.single(pos)
            elif c == '"':
                pos = self.double(pos + 1)
            elif c == "$":
                pos = self.dollar(pos, inner)
            elif c == "`":
                pos = self.backtick(pos)
            else:
                pos += 1
        if op == ":":
            self.refuse(first, len(self.places), "in a ${X:offset:length} (arithmetic)", numeric_ok=True)
        elif not allowed and op:
            self.refuse(first, len(self.places), f"after {op} inside the shell's ${{...}}")
        return pos

    def backtick(self, pos: int) -> int:
        end, i, escaped = -1, pos + 1, False
        while i < self.n:
            if self.s[i] == "\\":
                escaped, i = True, i + 2
            elif self.s[i] == "`":
                end = i
                break
            else:
                i += 1
        if end < 0:
            self.problems.append(f"line {self.line(pos)}: unterminated backtick")
            end = self.n
        if escaped:  # bash removes the backslashes and reads the text again
            self.literal_templates(pos + 1, end, "`...` with backslashes",
                                   "which the shell reads twice: write $( ) instead")
        else:
            self.bounded(end, lambda: self.list(pos + 1, None))
        return end + 1

    def arith(self, pos: int, end: str) -> int:
        """Up to the ``end`` that closes it (parentheses nest); placements inside are
        the caller's to refuse."""
        depth = 0
        opening, closing = ("[", "]") if end == "]" else ("(", ")")
        while pos < self.n:
            if depth == 0 and self.s.startswith(end, pos):
                return pos + len(end)
            c = self.s[pos]
            if c == opening:
                depth += 1
            elif c == closing:
                depth -= 1
            if c == "$":
                pos = self.dollar(pos, "arith")
            elif c == "'":
                pos = self.single(pos)
            elif c == '"':
                pos = self.double(pos + 1)
            elif c == "`":
                pos = self.backtick(pos)
            elif c == "\\":
                pos = self.backslash(pos, None, "arithmetic")
            else:
                pos += 1
        self.problems.append(f"arithmetic not closed by {end!r}")
        return pos

    def extglob(self, pos: int) -> int:
        depth = 0
        while pos < self.n:
            c = self.s[pos]
            if c == ")" and depth == 0:
                return pos + 1
            if c == "(":
                depth += 1
            elif c == ")":
                depth -= 1
            if c in "\\'\"$`":
                pos, _ = self.word(pos, ends=frozenset(" \t\n()|"))
            else:
                pos += 1
        return pos

    def array(self, pos: int) -> int:
        """``NAME=( elements )``; after the ``(``."""
        while pos < self.n:
            c = self.s[pos]
            if c in " \t\n":
                pos = self.heredocs(pos + 1) if c == "\n" else pos + 1
            elif c == "#":
                pos = self.comment(pos)
            elif c == ")":
                return pos + 1
            elif c == "[":  # [subscript]=value
                first = len(self.places)
                pos = self.arith(pos + 1, "]")
                self.refuse(first, len(self.places), "in an array subscript (arithmetic)", numeric_ok=True)
            else:
                pos, _ = self.word(pos)
                if pos < self.n and self.s[pos] in ";&|<>(":
                    self.problems.append(f"line {self.line(pos)}: unexpected {self.s[pos]!r} in an array")
                    pos += 1
        return pos

    # ------------------------------------------------------------------ compound commands
    def skip_space(self, pos: int) -> int:
        while pos < self.n:
            pos = self.blanks(pos)
            if pos < self.n and self.s[pos] == "\n":
                pos = self.heredocs(pos + 1)
            elif pos < self.n and self.s[pos] == "#":
                pos = self.comment(pos)
            else:
                return pos
        return pos

    def case(self, pos: int) -> int:
        """After ``case``: the subject, ``in``, then ``pattern) commands ;;`` items."""
        pos, _ = self.word(self.blanks(pos))
        pos, word = self.word(self.skip_space(pos))
        if word.lit != "in":
            self.problems.append(f"line {self.line(pos)}: 'case' without 'in'")
        while True:
            pos = self.skip_space(pos)
            if pos >= self.n:
                self.problems.append("'case' without 'esac'")
                return pos
            if _ESAC.match(self.s, pos):
                return pos + 4
            pos += self.s[pos] == "("
            while pos < self.n:  # patterns separated by |
                pos, _ = self.word(self.blanks(pos))
                pos = self.blanks(pos)
                if pos < self.n and self.s[pos] == "|":
                    pos += 1
                    continue
                if pos < self.n and self.s[pos] == ")":
                    pos += 1
                else:
                    self.problems.append(f"line {self.line(pos)}: case pattern without ')'")
                break
            pos = self.list(pos, "case")
            for term in (";;&", ";;", ";&"):
                if self.s.startswith(term, pos):
                    pos += len(term)
                    break

    def test(self, pos: int) -> int:
        """After ``[[``: the operands of -eq etc. are arithmetic, of -v a variable name."""
        tokens: list[tuple[str | None, _Word | None]] = []
        ops = ("&&", "||", "!", "(", ")", "<", ">")
        while True:
            pos = self.skip_space(pos)
            if pos >= self.n:
                self.problems.append("'[[' without ']]'")
                break
            if self.s.startswith("]]", pos):
                pos += 2
                break
            op = next((o for o in ops if self.s.startswith(o, pos)), None)
            if op:
                tokens.append((op, None))
                pos += len(op)
                continue
            regex = bool(tokens) and tokens[-1][0] == "=~"
            start = pos
            pos, word = self.word(pos, ends=frozenset(" \t\n") if regex else frozenset(" \t\n&|<>()"))
            if pos == start:  # ";" or "&" alone: not an expression bash takes
                self.problems.append(f"line {self.line(pos)}: unexpected {self.s[pos]!r} in [[ ]]")
                pos += 1
            tokens.append((word.lit, word))
        for k, (_, word) in enumerate(tokens):
            if word is None:
                continue
            before = tokens[k - 1][0] if k else None
            after = tokens[k + 1][0] if k + 1 < len(tokens) else None
            if before in _ARITH_TESTS or after in _ARITH_TESTS:
                self.refuse(word.first, word.last, f"as an operand of [[ {before if before in _ARITH_TESTS else after} ]] (arithmetic)",
                            numeric_ok=True)
            elif before in ("-v", "-R"):
                self.refuse(word.first, word.last, f"as the variable name of [[ {before} ]]")
        return pos

    # ------------------------------------------------------------------ what commands do
    def wrote(self, files: Iterable[str], first: int, last: int) -> None:
        if first < last:
            for name in files:
                self.written.setdefault(name, []).append((first, last))

    def analyze(self, cmd: _Command) -> None:
        words = cmd.words
        self.wrote(cmd.writes, cmd.first, cmd.last)
        if words and _file(words[0]) in self.written:  # ./job.sh, after writing a value into it
            self.refuse_words([words[0]], f"as the command {_file(words[0])}")
        # the command word (or the one a wrapper runs next: exec, sudo, srun ...): a value
        # there chooses the program, its path included (``${stem} --version``, ``/opt/${key}``)
        for j, word in enumerate(words):
            if j and (words[j - 1].lit not in _WRAPPERS or word.dash):
                break
            self.refuse_words([word], "as the command, which the value would choose (name the program in the script, pass the value as its argument)")
        if len(words) > 3 and words[0].lit in ("for", "select") and words[1].lit in self.integers and words[2].lit == "in":
            self.refuse_words(words[3:], f"as a value of {words[1].lit}, an integer variable that bash evaluates as arithmetic")
        for j, word in enumerate(words):
            if word.lit is not None and posixpath.basename(word.lit) in OPTION_CODE and (
                    j == 0 or words[j - 1].lit in _WRAPPERS):
                self.options(posixpath.basename(word.lit), words[j + 1 :])
            if word.lit is None:
                if j == 0 and any(w.lit and _C_OPTION.fullmatch(w.lit) for w in words[1:]):
                    _shell(self, "a command named by a variable", words[1:], cmd)  # "$SHELL" -c ...
                continue
            base = posixpath.basename(word.lit)
            before = words[j - 1].lit if j else None
            args = words[j + 1 :]
            if base in _BUILTINS and (j == 0 or before in ("builtin", "command", "exec")):
                _BUILTINS[base](self, base, args, cmd)
            elif base in _PROGRAMS and (j == 0 or base in _ANYWHERE or before in _WRAPPERS):
                _PROGRAMS[base](self, base, args, cmd)
            elif _PYTHON.fullmatch(base):
                _interpreter(self, base, args, cmd, "cm", "WXQ", value_long=("--check-hash-based-pycs",))
        for word in cmd.stdin:
            if cmd.reads_code:
                self.refuse(word.first, word.last, f"in the standard input that {cmd.reads_code} runs as code")

    def refuse_words(self, words: Iterable[_Word], why: str, numeric_ok: bool = True) -> None:
        for w in words:
            self.refuse(w.first, w.last, why, numeric_ok)
            for first, last in self.written.get(_file(w), ()):  # a file the script wrote a value into
                self.refuse(first, last, f"written into {_file(w)}, which is then run ({why})", numeric_ok)

    def options(self, program: str, args: list[_Word]) -> None:
        """Mark the values that start an argument of ``program`` before ``--``."""
        for w in args[:1] if program == "printf" else args:
            if w.lit == "--":
                return
            for p in self.places[w.first : w.last]:
                if _WORD_OPENING.match(self.s, w.start, p.start) and not p.option:
                    p.option = program


_CONTEXTS = {  # expansion context -> (words for messages, quote the reference?)
    "word": ("a bare word", True),
    "dq": ("double quotes", False),
    "heredoc": ("an unquoted here-document", False),
    "param": ("the shell's ${...:-...}", True),
    "param-heredoc": ("the shell's ${...:-...} in a here-document", False),
    "arith": ("arithmetic", False),
}


def _file(word: _Word) -> str:
    """How the script names a file, to tell the same file written and then run."""
    name = word.lit if word.lit is not None else word.raw
    return name[2:] if name.startswith("./") else name


def _unquote(raw: str) -> str | None:
    """The value of a word built of literal text and quotes only ("-c", 'bash')."""
    if not any(q in raw for q in "\\'\""):
        return raw
    try:
        parts = shlex.split(raw)
    except ValueError:
        return None
    return parts[0] if len(parts) == 1 else ("" if not parts else None)


def _shebang(text: str) -> str:
    """The interpreter's name from ``#!``, past ``env`` and its options; "" if none."""
    if not text.startswith("#!"):
        return ""
    words = text[2:].split("\n", 1)[0].split()
    if words and posixpath.basename(words[0]) == "env":
        words = [w for w in words[1:] if not w.startswith("-") and "=" not in w]
    return posixpath.basename(words[0]) if words else ""


def _options(words: list[_Word], code: str, value: str, code_long: Iterable[str] = (), value_long: Iterable[str] = (),
             permute: bool = False):
    """Walk ``-xyz`` clusters and long options. Yields (index, kind) with kind "code"
    (the word at index is code), "value" (an option's value), "operand" (the first
    operand: the walk stops there unless options may follow operands, as GNU getopt
    lets them), "dynamic" (an option built by the shell)."""
    k = 0
    while k < len(words):
        w = words[k]
        if w.lit == "--":
            if k + 1 < len(words):
                yield k + 1, "operand"
            return
        if not w.dash or w.lit == "-":
            yield k, "operand"
            if not permute:
                return
            k += 1
            continue
        if w.lit is None:  # built by the shell: its literal start may still name the option
            long = _LONG_ATTACHED.match(w.raw)
            short = _SHORT_ATTACHED.match(w.raw)
            if long:
                yield k, "code" if long.group(1) in code_long else "value"
            elif short and short.group(1) in code + value:
                yield k, "code" if short.group(1) in code else "value"
            else:
                yield k, "dynamic"
            k += 1
            continue
        raw = w.lit
        if raw.startswith("--"):
            name, eq, _ = raw.partition("=")
            if name in code_long:
                yield (k, "code") if eq else (k + 1, "code")
                k += 1 if eq else 2
                continue
            k += 2 if (name in value_long and not eq) else 1
            continue
        for i, letter in enumerate(raw[1:], 1):
            if letter in code or letter in value:
                kind = "code" if letter in code else "value"
                if i + 1 < len(raw):
                    yield k, kind
                    k += 1
                else:
                    yield k + 1, kind
                    k += 2
                break
        else:
            k += 1


def _interpreter(sc: _Scanner, name: str, args: list[_Word], cmd: _Command, code: str, value: str,
                 code_long: Iterable[str] = (), value_long: Iterable[str] = (),
                 script_operand: bool = True, stdin: bool = True, permute: bool = False) -> None:
    """A program that takes code in an option (``-c``/``-e``) or as its first operand."""
    given = operand = False
    for k, kind in _options(args, code, value, code_long, value_long, permute):
        if k >= len(args):
            break
        if kind in ("code", "dynamic"):
            sc.refuse_words([args[k]], f"in the code that {name} runs")
            given = given or kind == "code"
        elif kind == "operand" and not operand:
            operand = True
            if args[k].lit == "-" and script_operand:  # "python3 - <<EOF": the program is standard input
                break
            if script_operand and not given:
                sc.refuse_words([args[k]], f"as the program or script that {name} runs")
                given = True
    if stdin and not given:
        cmd.reads_code = cmd.reads_code or name


def _shell(sc: _Scanner, name: str, args: list[_Word], cmd: _Command) -> None:
    """``bash -c CODE name args...``: CODE is code, the rest are positional parameters.
    ``bash FILE`` runs FILE; ``bash`` alone or ``bash -s`` reads code from stdin."""
    has_c = reads_stdin = False
    k = 0
    while k < len(args):
        raw = args[k].lit
        if raw == "--":
            k += 1
            break
        if not (args[k].dash or (raw or "").startswith("+")) or raw in ("-", "+"):
            break
        if raw is None:  # an option the shell builds: it may be -c
            sc.refuse_words([args[k]], f"in an option of {name}")
            has_c = True
        elif not raw.startswith("--"):
            has_c = has_c or "c" in raw[1:]
            reads_stdin = reads_stdin or "s" in raw[1:]
            k += ("o" in raw[1:] or "O" in raw[1:])
        elif raw in ("--rcfile", "--init-file"):
            k += 1
        k += 1
    if k < len(args):
        what = f"the command string of {name} -c" if has_c else f"the script that {name} runs"
        sc.refuse_words(args[: k + 1], f"as {what}")
    if reads_stdin or k >= len(args):  # code from stdin, or (-c) from what xargs appends
        cmd.reads_code = cmd.reads_code or name


def _all_arguments(why: str, stdin: bool = False):
    def rule(sc: _Scanner, name: str, args: list[_Word], cmd: _Command) -> None:
        sc.refuse_words(args, why.format(name=name))
        if stdin:
            cmd.reads_code = cmd.reads_code or name
    return rule


def _first_operand(why: str, numeric_ok: bool = False):
    def rule(sc: _Scanner, name: str, args: list[_Word], cmd: _Command) -> None:
        for word in args:
            if word.dash and word.lit is None:  # an option or the operand: cannot tell
                sc.refuse_words([word], why.format(name=name), numeric_ok)
            elif not word.dash and word.lit != "--":
                sc.refuse_words([word], why.format(name=name), numeric_ok)
                return
    return rule


def _after(option: str, why: str):
    def rule(sc: _Scanner, name: str, args: list[_Word], cmd: _Command) -> None:
        for k, word in enumerate(args[:-1]):
            if word.lit == option:
                sc.refuse_words([args[k + 1]], why.format(name=name), numeric_ok=False)
    return rule


def _declaration(sc: _Scanner, name: str, args: list[_Word], cmd: _Command) -> None:
    """``declare NAME=value``: a value may be the value, never the name (bash evaluates
    a subscript in a name: ``declare "a[$(cmd)]=1"`` runs cmd); ``-i`` makes it arithmetic."""
    integer = False
    for word in args:
        if word.lit and word.lit.startswith(("-", "+")):
            integer = integer or "i" in word.lit
        elif not _NAME_PREFIX.match(word.raw):
            sc.refuse_words([word], f"as a variable name of {name}", numeric_ok=False)
        elif (assigned := _ASSIGN_START.match(word.raw)) and assigned.group() in CODE_VARIABLES | sc.integers:
            sc.code_variable(assigned.group(), word)
        elif integer:
            sc.refuse_words([word], f"as a value of {name} -i (arithmetic)")


def _ssh(sc: _Scanner, name: str, args: list[_Word], cmd: _Command) -> None:
    sc.refuse_words(args, f"in the arguments of {name}, which a shell on the other machine reads as code", False)
    operands = [k for k, kind in _options(args, "", "BbcDEeFIiJLlmOoPpQRSWw") if kind == "operand"]
    if not operands or operands[0] + 1 >= len(args):  # no remote command: the remote shell reads stdin
        cmd.reads_code = cmd.reads_code or name


def _matlab(sc: _Scanner, name: str, args: list[_Word], cmd: _Command) -> None:
    """``matlab -batch CODE`` / ``-r CODE``; without them it reads code from stdin."""
    code = [args[k + 1] for k, w in enumerate(args[:-1]) if w.lit in ("-batch", "-r")]
    sc.refuse_words(code, f"in the code that {name} runs")
    if not code:
        cmd.reads_code = cmd.reads_code or name


def _export(sc: _Scanner, name: str, args: list[_Word]) -> None:
    """``--export=ALL,INPUT=${key}``: Slurm splits the list at commas, so a value with a
    comma sets more variables of that job (``x,BASH_ENV=/fsx/in/evil.sh``)."""
    for k, w in enumerate(args):
        if w.raw.startswith(("--export=", "'--export=", '"--export=')):
            sc.refuse_words([w], f"in {name} --export, which splits its list at commas (a value with one sets other "
                            "variables of that job, BASH_ENV...): --export=ALL, the default, passes SLURM_TRIGGER_*",
                            numeric_ok=True)
        elif w.lit == "--export" and k + 1 < len(args):
            _export(sc, name, [_Word(args[k + 1].start, "--export=" + args[k + 1].raw, None, args[k + 1].first,
                                     args[k + 1].last)])


def _srun(sc: _Scanner, name: str, args: list[_Word], cmd: _Command) -> None:
    _export(sc, name, args)


def _sbatch(sc: _Scanner, name: str, args: list[_Word], cmd: _Command) -> None:
    _export(sc, name, args)
    _interpreter(sc, name, args, cmd, "", "AaBbcDdeFGiJLMmNnopqSstwx", code_long=("--wrap",),
                 value_long=_SBATCH_VALUE_LONG)


def _xargs(sc: _Scanner, name: str, args: list[_Word], cmd: _Command) -> None:
    """``xargs -I{} sh -c 'echo {}'`` pastes its input into code."""
    replace = any(w.lit and (w.lit.startswith(("-I", "-i", "--replace"))) for w in args)
    runs = any(w.lit and (posixpath.basename(w.lit) in _PROGRAMS or _PYTHON.fullmatch(posixpath.basename(w.lit)))
               for w in args)
    if replace and runs:
        cmd.reads_code = cmd.reads_code or "xargs -I"


_SBATCH_VALUE_LONG = tuple(f"--{o}" for o in (
    "account", "acctg-freq", "array", "batch", "bb", "bbf", "begin", "chdir", "cluster-constraint", "clusters",
    "comment", "constraint", "container", "core-spec", "cores-per-socket", "cpu-freq", "cpus-per-gpu",
    "cpus-per-task", "deadline", "delay-boot", "dependency", "distribution", "error", "exclude", "export",
    "export-file", "extra-node-info", "gid", "gpu-bind", "gpu-freq", "gpus", "gpus-per-node", "gpus-per-socket",
    "gpus-per-task", "gres", "gres-flags", "input", "job-name", "licenses", "mail-type", "mail-user", "mcs-label",
    "mem", "mem-bind", "mem-per-cpu", "mem-per-gpu", "mincpus", "network", "nice", "nodefile", "nodelist",
    "nodes", "ntasks", "ntasks-per-core", "ntasks-per-gpu", "ntasks-per-node", "ntasks-per-socket", "open-mode",
    "output", "partition", "power", "prefer", "priority", "profile", "propagate", "qos", "reservation",
    "signal", "sockets-per-node", "switches", "thread-spec", "threads-per-core", "time", "time-min", "tmp",
    "tres-per-task", "uid", "wait-all-nodes", "wckey",
))

_DECLARATIONS = frozenset({"declare", "typeset", "local", "export", "readonly"})
_ANYWHERE = _SHELLS | {"perl", "ruby", "node", "nodejs", "awk", "gawk", "mawk", "nawk", "sed", "gsed", "ssh", "sbatch",
                       "su", "runuser", "flock", "xargs", "Rscript", "julia", "php", "lua", "luajit", "tclsh",
                       "octave", "matlab", "gnuplot"}  # not R, ncl, wish: words as well as programs

# Shell builtins, judged only where they are the command (or follow builtin/command/exec).
_BUILTINS: dict[str, Callable[[_Scanner, str, list[_Word], _Command], None]] = {
    "eval": _all_arguments("in the arguments of {name}, which the shell reads again as code"),
    "alias": _all_arguments("in the arguments of {name}, which the shell reads again as code"),
    "source": _first_operand("as the file that {name} runs"),
    ".": _first_operand("as the file that {name} runs"),
    "trap": _first_operand("as the command of {name}, which the shell reads again as code"),
    "let": lambda sc, name, args, cmd: sc.refuse_words(args, "in the arguments of let (arithmetic)"),
    "read": _all_arguments("in the arguments of {name}, which names variables"),
    "mapfile": _all_arguments("in the arguments of {name}, which names a variable"),
    "readarray": _all_arguments("in the arguments of {name}, which names a variable"),
    "unset": _all_arguments("in the arguments of {name}, which names variables"),
    "getopts": _all_arguments("in the arguments of {name}, which names a variable"),
    "printf": _after("-v", "as the variable name of {name} -v"),
    "test": _after("-v", "as the variable name of {name} -v"),
    "[": _after("-v", "as the variable name of {name} -v"),
    "wait": _after("-p", "as the variable name of {name} -p"),
    **{d: _declaration for d in _DECLARATIONS},
}

# Programs that read an argument, or their standard input, as code; judged wherever
# they appear in a command (after sudo, env, srun, timeout, xargs, find -exec ...).
_PROGRAMS: dict[str, Callable[[_Scanner, str, list[_Word], _Command], None]] = {
    **{sh: _shell for sh in _SHELLS},
    # code: -e and the modules they load (-M, -r, --require); value: options with a plain value
    "perl": lambda sc, n, a, c: _interpreter(sc, n, a, c, "eEMm", "Ix"),
    "ruby": lambda sc, n, a, c: _interpreter(sc, n, a, c, "er", "ICFE"),
    **{node: (lambda sc, n, a, c: _interpreter(sc, n, a, c, "epr", "", code_long=("--eval", "--print", "--require"),
                                               value_long=("--input-type",))) for node in ("node", "nodejs")},
    **{awk: (lambda sc, n, a, c: _interpreter(
        sc, n, a, c, "e", "Fvf" if not any(w.lit and w.lit.startswith("-f") for w in a) else "Fv",
        code_long=("--source",), value_long=("--field-separator", "--assign", "--file"),
        script_operand=not any(w.lit and w.lit.startswith(("-f", "--file")) for w in a), stdin=False))
        for awk in ("awk", "gawk", "mawk", "nawk")},
    **{sed: (lambda sc, n, a, c: _interpreter(
        sc, n, a, c, "e", "fl", code_long=("--expression",), value_long=("--file", "--line-length"),
        script_operand=not any(w.lit and w.lit.startswith(("-e", "-f", "--expression", "--file")) for w in a),
        stdin=False, permute=True)) for sed in ("sed", "gsed")},
    "su": lambda sc, n, a, c: _interpreter(sc, n, a, c, "c", "sgGw", code_long=("--command", "--session-command"),
                                           value_long=("--shell", "--group", "--supp-group"), script_operand=False,
                                           permute=True),
    "runuser": lambda sc, n, a, c: _interpreter(sc, n, a, c, "c", "sgGu", code_long=("--command",),
                                                value_long=("--shell", "--group", "--supp-group", "--user"),
                                                script_operand=False, permute=True),
    "flock": lambda sc, n, a, c: _interpreter(sc, n, a, c, "c", "wE", code_long=("--command",), script_operand=False,
                                              stdin=False, permute=True),
    "script": lambda sc, n, a, c: _interpreter(sc, n, a, c, "c", "TIOBtmE", code_long=("--command",),
                                               script_operand=False, stdin=False, permute=True),
    # the languages of genomics and weather groups: code in -e (and the like), the script, or stdin
    "Rscript": lambda sc, n, a, c: _interpreter(sc, n, a, c, "e", "", value_long=("--default-packages",)),
    "R": lambda sc, n, a, c: _interpreter(sc, n, a, c, "e", "fd", code_long=("--file",), script_operand=False),
    "julia": lambda sc, n, a, c: _interpreter(sc, n, a, c, "eEL", "CJpt", code_long=("--eval", "--print", "--load"),
                                              value_long=("--project", "--threads", "--sysimage")),
    "php": lambda sc, n, a, c: _interpreter(sc, n, a, c, "rBRFEf", "cdz"),
    **{lua: (lambda sc, n, a, c: _interpreter(sc, n, a, c, "el", "")) for lua in ("lua", "luajit")},
    **{tcl: (lambda sc, n, a, c: _interpreter(sc, n, a, c, "", "")) for tcl in ("tclsh", "wish")},
    "octave": lambda sc, n, a, c: _interpreter(sc, n, a, c, "", "", code_long=("--eval",), permute=True),
    "matlab": _matlab,
    "ncl": _all_arguments("in the arguments of {name}, which it reads as NCL code", stdin=True),
    "gnuplot": lambda sc, n, a, c: _interpreter(sc, n, a, c, "e", "", code_long=("--eval",), permute=True),
    "crontab": _all_arguments("in the arguments of {name}, which installs them as commands to run", stdin=True),
    "sbatch": _sbatch,
    "srun": _srun,
    "ssh": _ssh,
    "watch": _all_arguments("in the arguments of {name}, which runs them through sh -c"),
    "parallel": _all_arguments("in the arguments of {name}, which runs them through a shell", stdin=True),
    "at": _all_arguments("in the arguments of {name}", stdin=True),
    "batch": _all_arguments("in the arguments of {name}", stdin=True),
    "xargs": _xargs,
}
