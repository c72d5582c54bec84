"""Every command in the README and in docs/ is exercised here.

What counts as a command:

* each line of a ```bash (or sh, shell, console) block, and of an unlabelled block, whose
  program is one the docs use (``kinrec``, ``python``, ``make``, ``curl``, ``pip``); a
  ``VAR=$(kinrec ...)`` line is the command inside, ``... &`` the command before it;
* each inline code span that starts with ``kinrec `` or ``python benchmarks/``.

Every command is checked against what it calls: a ``kinrec`` command's subcommands, options
and required options against the command line itself; a script's path and options against
the script; a ``make`` target against the Makefile; a ``curl`` URL's method, path and query
parameters against the service's routes; ``pip install 'kinrec[EXTRA]'`` against
pyproject.toml.

A block right after the line ``<!-- docs-test: run -->`` (invisible on the page) is also run,
command by command in page order, in a fresh folder: the cheap flows (a tiny synthetic
dataset, or ml-100k when a local copy is at ``$KINREC_DATA_DIR/ml-100k``; without one that
block is skipped and says so). Commands that need minutes, a large dataset or a running
service are only checked. docs/data.md's worked example is run by tests/test_docs_data.py,
docs/python.md's examples by tests/test_docs_python.py.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import typer
from typer.testing import CliRunner

from kinrec.cli import app

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
RESULTS = ROOT / "benchmarks" / "results"
PAGES = [README, *sorted(DOCS.glob("*.md"))]
RUN_MARK = "<!-- docs-test: run -->"
SHELL = {"bash", "sh", "shell", "console", ""}
PROGRAMS = {"kinrec", "python", "make", "curl", "pip"}
UTILITIES = {"tail", "head", "grep", "jq", "cat", "cd", "cp", "mkdir", "export"}  # not checked
INLINE = re.compile(r"(?<!`)`((?:\.venv/bin/)?kinrec\s[^`]+|python\s+benchmarks/[^`]+)`(?!`)")
CAPTURE = re.compile(r"^\w+=\$\((.*)\)$")

runner = CliRunner()


# ------------------------------------------------------------------------------ extraction
@dataclass
class Block:
    page: Path
    line: int  # 1-based line of the opening fence
    lang: str
    body: str
    run: bool


@dataclass
class Command:
    page: Path
    line: int
    text: str
    literal: bool  # a block line (complete and runnable) rather than an inline mention
    tokens: list[str] = field(default_factory=list)

    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}: {self.text}"


def blocks(page: Path) -> list[Block]:
    """The page's fenced blocks, each with the language of its fence."""
    lines = page.read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        opening = re.match(r"^(\s*)(`{3,})(.*)$", lines[i])
        if not opening:
            i += 1
            continue
        indent, fence, info = opening.groups()
        end = i + 1
        while end < len(lines) and not lines[end].strip().startswith(fence):
            end += 1
        before = next((lines[j].strip() for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        body = "\n".join(line.removeprefix(indent) for line in lines[i + 1 : end])
        lang = info.split()[0] if info.split() else ""
        found.append(Block(page, i + 1, lang, body, before == RUN_MARK))
        i = end + 1
    return found


def _prose(page: Path) -> str:
    """The page without its fenced blocks (their lines kept blank, so line numbers hold)."""
    lines = page.read_text(encoding="utf-8").splitlines()
    for block in blocks(page):
        n = block.body.count("\n") + 2
        lines[block.line - 1 : block.line - 1 + n] = [""] * n
    return "\n".join(lines)


def _segments(line: str) -> list[list[str]]:
    """The simple commands of one shell line: ``VAR=$(cmd | tail -1)`` gives ``cmd``."""
    if match := CAPTURE.match(line):
        line = match.group(1)
    tokens = shlex.split(line, comments=True)
    parts: list[list[str]] = [[]]
    for token in tokens:
        if token in ("|", "&&", ";", "||"):
            parts.append([])
        elif token != "&":
            parts[-1].append(token)
    commands = []
    for part in parts:
        while part and re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", part[0]):  # VAR=value cmd
            part = part[1:]
        if part:
            if part[0].endswith("/kinrec"):  # .venv/bin/kinrec
                part[0] = "kinrec"
            commands.append(part)
    return commands


def block_commands(block: Block) -> list[Command]:
    if block.lang not in SHELL:
        return []
    out = []
    joined = block.body.replace("\\\n", " ")
    offset = 0
    for offset, text in enumerate(joined.splitlines()):
        text = text.strip()
        if not text or text.startswith("#"):
            continue
        for tokens in _segments(text):
            if block.lang == "" and tokens[0] not in PROGRAMS:
                break  # an unlabelled block also holds output, errors and file listings
            if tokens[0] in PROGRAMS or block.lang != "":
                out.append(Command(block.page, block.line + 1 + offset, text, True, tokens))
    return out


def inline_commands(page: Path) -> list[Command]:
    out = []
    prose = _prose(page)
    for match in INLINE.finditer(prose):
        text = " ".join(match.group(1).split())
        line = prose.count("\n", 0, match.start()) + 1
        tokens = text.replace("[", " ").replace("]", " ").split()
        tokens = [t for t in tokens if t != "..."]
        if tokens[0].endswith("/kinrec"):
            tokens[0] = "kinrec"
        out.append(Command(page, line, text, False, tokens))
    return out


def page_commands(page: Path) -> list[Command]:
    found = [c for b in blocks(page) for c in block_commands(b)]
    return found + inline_commands(page)


# ------------------------------------------------------------------------------ checks
def _click(command=None):
    return typer.main.get_command(app) if command is None else command


def check_kinrec(cmd: Command) -> list[str]:
    """Subcommands, options and (for a complete command) required options and arguments."""
    node, tokens = _click(), cmd.tokens[1:]
    asks_help = "--help" in tokens
    i = 0
    while hasattr(node, "commands") and i < len(tokens) and not tokens[i].startswith("-"):
        names = tokens[i].split("|") if not cmd.literal else [tokens[i]]
        unknown = [n for n in names if n not in node.commands]
        if unknown:
            return [f"no subcommand {unknown[0]!r} (has {', '.join(sorted(node.commands))})"]
        node, i = node.commands[names[0]], i + 1
        if len(names) > 1:
            return []  # "kinrec keys create|list|revoke": each exists
    if hasattr(node, "commands"):
        return [] if asks_help or not cmd.literal else ["a command group, not a command"]
    options = {p: [*p.opts, *p.secondary_opts] for p in node.params if _is_option(p)}
    known = {name for names in options.values() for name in names} | {"--help"}
    errors = []
    positional: list[str] = []
    rest = iter(tokens[i:])
    for token in rest:
        if token.startswith("-") and len(token) > 1:
            name = token.split("=", 1)[0]
            if name not in known:
                errors.append(f"{' '.join(cmd.tokens[: i + 1])} has no option {name}")
                continue
            param = next((p for p, names in options.items() if name in names), None)
            if param is not None and not param.is_flag and "=" not in token:
                next(rest, None)  # its value
        else:
            positional.append(token)
    if cmd.literal and not asks_help:
        for param, names in options.items():
            if param.required and not any(t.split("=")[0] in names for t in tokens):
                errors.append(f"misses the required option {names[0]}")
        arguments = [p for p in node.params if not _is_option(p)]
        if not any(p.nargs == -1 for p in arguments) and len(positional) > len(arguments):
            errors.append(f"takes {len(arguments)} argument(s), given {positional}")
        required = [p for p in arguments if p.required]
        if len(positional) < len(required):
            errors.append(f"misses the argument {required[len(positional)].name}")
    return errors


def _is_option(param) -> bool:
    return param.param_type_name == "option"


def check_script(cmd: Command) -> list[str]:
    """``python path/to/script.py --option ...``: the script exists and reads its options."""
    args = cmd.tokens[1:]
    if not args or args[0] == "-m":
        return []
    script = ROOT / args[0]
    if not script.is_file():
        return [f"no script {args[0]}"]
    source = script.read_text(encoding="utf-8")
    return [
        f"{args[0]} has no option {name}"
        for name in (t.split("=")[0] for t in args[1:] if t.startswith("--"))
        if f'"{name}"' not in source and f"'{name}'" not in source
    ]


def check_make(cmd: Command) -> list[str]:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    return [
        f"the Makefile has no target {t!r}"
        for t in cmd.tokens[1:]
        if not t.startswith("-") and not re.search(rf"^{re.escape(t)}:", makefile, re.MULTILINE)
    ]


def check_pip(cmd: Command) -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    extras = project.get("optional-dependencies", {})
    errors = []
    for token in cmd.tokens[2:]:
        if match := re.fullmatch(r"kinrec\[([\w,-]+)\]", token):
            errors += [f"pyproject.toml has no extra {e!r}" for e in match.group(1).split(",")]
            errors = [e for e in errors if e.split("'")[1] not in extras]
    return errors


def _routes() -> list[tuple[str, str, object]]:
    """(method, path, route) of every route of the service's API."""
    from kinrec.serving.routes import ops, router

    return [
        (method, route.path, route)
        for route in [*router.routes, *ops.routes]
        for method in sorted(route.methods - {"HEAD"})
    ]


def _query_params(route) -> set[str]:
    """The query parameters of a route, its dependencies' included."""
    found, todo = set(), [route.dependant]
    while todo:
        dependant = todo.pop()
        found |= {p.alias for p in dependant.query_params}
        todo += dependant.dependencies
    return found


def check_curl(cmd: Command) -> list[str]:
    method, url, rest = "GET", None, iter(cmd.tokens[1:])
    for token in rest:
        if token in ("-X", "--request"):
            method = next(rest)
        elif token in ("-d", "--data", "--data-binary", "--json"):
            next(rest)
            method = "POST" if method == "GET" else method
        elif token in ("-H", "--header", "-o", "-w"):
            next(rest)
        elif not token.startswith("-"):
            url = token
    if url is None:
        return ["no URL"]
    parts = urlsplit(url if "://" in url else f"http://{url}")
    for verb, path, route in _routes():
        if verb == method and route.path_regex.match(parts.path):
            unknown = set(parse_qs(parts.query, keep_blank_values=True)) - _query_params(route)
            return [f"{path} has no query parameter {sorted(unknown)}"] if unknown else []
    return [f"the service has no route {method} {parts.path}"]


CHECKS = {
    "kinrec": check_kinrec,
    "python": check_script,
    "make": check_make,
    "pip": check_pip,
    "curl": check_curl,
}


def check(cmd: Command) -> list[str]:
    program = cmd.tokens[0]
    if program in UTILITIES:
        return []
    if program not in CHECKS:
        return [f"unknown program {program!r}: the docs' commands use {sorted(PROGRAMS)}"]
    return [f"{cmd.where()}\n    {e}" for e in CHECKS[program](cmd)]


# ------------------------------------------------------------------------------ tests
@pytest.mark.parametrize("page", [*PAGES, RESULTS], ids=lambda p: str(p.relative_to(ROOT)))
def test_every_command_calls_what_exists(page: Path) -> None:
    pages = sorted(page.glob("*.md")) if page.is_dir() else [page]
    commands = [c for p in pages for c in page_commands(p)]
    errors = [e for c in commands for e in check(c)]
    assert not errors, "commands in the docs that do not match the code:\n" + "\n".join(errors)


def test_the_extraction_finds_the_commands() -> None:
    """A guard against a parser that silently finds nothing."""
    readme = page_commands(README)
    assert sum(c.tokens[0] == "kinrec" and c.literal for c in readme) >= 8
    assert [c.tokens for c in readme if c.tokens[0] == "make"] == [
        ["make", "demo"],
        ["make", "test"],
    ]
    serving = page_commands(DOCS / "serving.md")
    assert sum(c.tokens[0] == "curl" for c in serving) >= 3
    assert sum(c.tokens[0] == "python" for c in page_commands(DOCS / "benchmarks.md")) >= 20
    # the checks themselves catch what they should
    bad = [
        Command(README, 1, "x", True, ["kinrec", "train", "--no-such-option"]),
        Command(README, 1, "x", True, ["kinrec", "similar", "--model-dir", "runs/x"]),
        Command(README, 1, "x", True, ["kinrec", "nosuch"]),
        Command(README, 1, "x", True, ["python", "benchmarks/transfer.py", "--no-such"]),
        Command(README, 1, "x", True, ["curl", "localhost:8000/v1/nosuch"]),
        Command(README, 1, "x", True, ["curl", "localhost:8000/v1/users/1/recommendations?kk=1"]),
        Command(README, 1, "x", True, ["make", "nosuch"]),
    ]
    assert all(check(c) for c in bad), [c.tokens for c in bad if not check(c)]


RUN_BLOCKS = [b for page in PAGES for b in blocks(page) if b.run]


def _needs_local(block: Block) -> list[str]:
    """Registered datasets the block fetches or ingests by name."""
    from kinrec.data.registry import list_datasets

    names = {spec.name for spec in list_datasets()}
    needed = []
    for cmd in block_commands(block):
        args = cmd.tokens[1:]
        if args[:2] == ["data", "fetch"] or args[:1] == ["ingest"]:
            needed += [a for a in args if a in names]
    return needed


@pytest.mark.parametrize(
    "block", RUN_BLOCKS, ids=[f"{b.page.relative_to(ROOT)}:{b.line}" for b in RUN_BLOCKS]
)
def test_the_marked_blocks_run(block: Block, tmp_path: Path, monkeypatch) -> None:
    local = os.environ.get("KINREC_DATA_DIR")
    needed = sorted(set(_needs_local(block)))
    missing = [n for n in needed if not (local and (Path(local) / n).is_dir())]
    if missing:
        pytest.skip(f"needs a local copy of {missing} under $KINREC_DATA_DIR (no download here)")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("KINREC_DB", raising=False)
    monkeypatch.setenv("KINREC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    commands = block_commands(block)
    assert commands, f"{block.page.name}:{block.line}: a run block without commands"
    for cmd in commands:
        assert cmd.tokens[0] == "kinrec" and cmd.tokens[1] != "serve", (
            f"{cmd.where()}: run blocks hold kinrec commands that finish"
        )
        result = runner.invoke(app, cmd.tokens[1:], env={"COLUMNS": "200"})
        assert result.exit_code == 0, f"{cmd.where()} failed:\n{result.output}"
        assert result.stdout.strip(), f"{cmd.where()} printed nothing"


def test_there_are_run_blocks() -> None:
    assert {b.page.name for b in RUN_BLOCKS} >= {"README.md", "index.md"}


# ------------------------------------------------------------------------------ the pages
def test_the_readme_opens_with_the_two_commands() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert lines[:6] == [
        "# kinrec",
        "",
        "```bash",
        "make demo   # create .venv, fetch ml-100k, ingest into SQLite, train kinformer, "
        "evaluate, recommend",
        "make test   # create .venv, run the test suite (what CI runs)",
        "```",
    ]


def slug(heading: str) -> str:
    """The anchor of a heading, as mkdocs (toc) and GitHub make it for plain headings."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    text = re.sub(r"[^\w\s-]", "", text)
    return re.sub(r"[\s]+", "-", text)


def anchors(page: Path) -> set[str]:
    return {
        slug(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.*?)\s*$", _prose(page), re.MULTILINE)
    }


def test_the_readme_links_resolve() -> None:
    errors = []
    for target in re.findall(r"\]\(([^)\s]+)\)", _prose(README)):
        if re.match(r"\w+://", target):
            continue
        path, _, anchor = target.partition("#")
        file = ROOT / path if path else README
        if not file.exists():
            errors.append(f"{target}: no such file")
        elif anchor and anchor not in anchors(file):
            errors.append(f"{target}: {path} has no heading for #{anchor}")
    assert not errors, errors


def test_the_readme_results_link_to_their_commands() -> None:
    """Each row of the at-a-glance table links to a benchmarks section holding a command."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Results at a glance") :]
    section = section[: section.index("\n## ", 1)]
    rows = [r for r in section.splitlines() if r.startswith("| ") and "---" not in r][1:]
    assert len(rows) >= 5
    page = (DOCS / "benchmarks.md").read_text(encoding="utf-8")
    for row in rows:
        assert len(row) < 250, f"keep the at-a-glance cells short: {row}"
        target = re.search(r"\(docs/benchmarks\.md#([\w-]+)\)", row)
        assert target, f"no link to docs/benchmarks.md in {row}"
        heading = next(
            m
            for m in re.finditer(r"^## (.*)$", page, re.MULTILINE)
            if slug(m.group(1)) == target[1]
        )
        body = page[heading.end() :].split("\n## ")[0]
        assert "python benchmarks/" in body or "kinrec " in body, target[1]


def test_every_result_file_is_linked_from_the_benchmarks_page() -> None:
    text = (DOCS / "benchmarks.md").read_text(encoding="utf-8")
    linked = set(re.findall(r"\(\.\./benchmarks/results/([\w.-]+\.md)\)", text))
    files = {p.name for p in RESULTS.glob("*.md")}
    assert files <= linked, f"result files the benchmarks page does not link: {files - linked}"
    assert linked <= files, f"links to result files that do not exist: {linked - files}"


def test_the_http_api_table_lists_every_route() -> None:
    text = (DOCS / "serving.md").read_text(encoding="utf-8")
    section = text[text.index("## The HTTP API") :].split("\n## ")[0]
    documented: dict[tuple[str, str], set[str]] = {}
    for row in section.splitlines():
        if not row.startswith("| `"):
            continue
        for span in re.findall(r"`([A-Z]+ /[^`]*)`", row.split(" | ")[0]):
            method, url = span.split(" ", 1)
            path, _, query = url.partition("?")
            params = {p.split("=")[0] for p in query.split("&") if p}
            documented[(method, re.sub(r"\{\w+\}", "{}", path))] = params
    routes = {
        (method, re.sub(r"\{\w+\}", "{}", path)): _query_params(route)
        for method, path, route in _routes()
    }
    assert set(documented) == set(routes), (
        f"undocumented: {sorted(set(routes) - set(documented))}; "
        f"documented but absent: {sorted(set(documented) - set(routes))}"
    )
    for key, params in routes.items():
        assert documented[key] == params, f"{key}: documented {documented[key]}, has {params}"


def _example(page: Path) -> list[str]:
    text = page.read_text(encoding="utf-8")
    start, end = text.index("<!-- python-example -->"), text.index("<!-- /python-example -->")
    body = text[start:end].split("```python\n", 1)[1].split("```", 1)[0]
    return [line for line in body.splitlines() if line.strip()]


def test_the_python_examples_are_excerpts_of_the_python_page() -> None:
    """The README's and the home page's examples are lines of docs/python.md's first session,
    which tests/test_docs_python.py runs."""
    python_page = DOCS / "python.md"
    if not python_page.exists():
        pytest.skip("docs/python.md is not there yet")
    source = python_page.read_text(encoding="utf-8")
    for page in (README, DOCS / "index.md"):
        lines = _example(page)
        assert 5 <= len(lines) <= 14, f"{page.name}: keep the example short"
        missing = [line for line in lines if line not in source.splitlines()]
        assert not missing, f"{page.name}: lines not in docs/python.md: {missing}"


MKDOCS = shutil.which("mkdocs", path=str(Path(sys.executable).parent)) or shutil.which("mkdocs")


@pytest.mark.skipif(MKDOCS is None, reason="mkdocs is not installed (the dev extra has it)")
def test_the_site_builds_strictly(tmp_path: Path) -> None:
    """`mkdocs build --strict`: a broken link, anchor or page outside the nav fails."""
    result = subprocess.run(
        [MKDOCS, "build", "--strict", "--quiet", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
