"""docs/data.md's worked example, run as written: its files, then its commands (ingest, train,
API key, serve in the background, curl), and the recommendation that comes back.

The page is the source of truth: this test only knows how to run the few shell forms it uses
(``kinrec ...``, ``kinrec ... &``, ``VAR=$(kinrec ... | tail -1)`` and ``curl``)."""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from typer.testing import CliRunner

from kinrec.cli import app

DOC = Path(__file__).resolve().parents[1] / "docs" / "data.md"
SECTION = "## A worked example"
FENCE = re.compile(r"^```(\w+)?(?: +(\S+))?\n(.*?)^```$", re.MULTILINE | re.DOTALL)
CAPTURE = re.compile(r"^(\w+)=\$\((.*)\|\s*tail -1\)$")
DOC_ADDRESS = "127.0.0.1:8000"

runner = CliRunner()


def worked_example() -> tuple[dict[str, str], list[str]]:
    """The example's files (name -> text) and its shell commands, in page order."""
    text = DOC.read_text(encoding="utf-8")
    assert SECTION in text, f"{DOC} lost its section {SECTION!r}"
    section = text[text.index(SECTION) :]
    files: dict[str, str] = {}
    commands: list[str] = []
    for lang, name, body in FENCE.findall(section):
        if name:
            files[name] = body
        elif lang == "bash":
            joined = body.replace("\\\n", " ")
            commands += [c.strip() for c in joined.splitlines() if c.strip() and c[0] != "#"]
    return files, commands


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _kinrec(args: list[str]) -> str:
    """Run a kinrec command in this process; its stdout."""
    assert args[0] == "kinrec", args
    res = runner.invoke(app, args[1:], env={"COLUMNS": "200"})
    assert res.exit_code == 0, f"{shlex.join(args)} failed:\n{res.output}"
    return res.stdout


def _serve(args: list[str], cwd: Path, port: int) -> subprocess.Popen:
    """Start ``kinrec serve ...`` on 127.0.0.1:``port`` and wait until it is ready."""
    assert args[:2] == ["kinrec", "serve"] and "--port" not in args, args
    cmd = [sys.executable, "-m", "kinrec.cli", *args[1:], "--port", str(port)]
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise RuntimeError(proc.stderr.read().decode())
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("the service did not become ready")


def _curl(args: list[str], port: int) -> httpx.Response:
    headers: dict[str, str] = {}
    url = None
    rest = iter(args[1:])
    for arg in rest:
        if arg == "-H":
            key, _, value = next(rest).partition(":")
            headers[key.strip()] = value.strip()
        elif not arg.startswith("-"):
            url = arg
    assert url is not None and DOC_ADDRESS in url, args
    return httpx.get(url.replace(DOC_ADDRESS, f"127.0.0.1:{port}"), headers=headers, timeout=30)


def test_the_worked_example_runs_as_written(tmp_path: Path, monkeypatch) -> None:
    files, commands = worked_example()
    assert {"interactions.csv", "items.csv", "triples.csv", "links.csv", "data.toml"} <= set(files)
    for name, body in files.items():
        (tmp_path / name).write_text(body, encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("KINREC_DB", raising=False)
    port = _free_port()
    env: dict[str, str] = {}
    outputs: list[tuple[list[str], str]] = []
    responses: list[httpx.Response] = []
    servers: list[subprocess.Popen] = []
    try:
        for line in commands:
            line = re.sub(r"\$(\w+)", lambda m: env[m.group(1)], line)
            if match := CAPTURE.match(line):
                env[match.group(1)] = _kinrec(shlex.split(match.group(2))).strip().splitlines()[-1]
                continue
            args = shlex.split(line)
            if args[-1] == "&":
                servers.append(_serve(args[:-1], tmp_path, port))
            elif args[0] == "curl":
                responses.append(_curl(args, port))
            else:
                outputs.append((args, _kinrec(args)))
    finally:
        for proc in servers:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()

    assert servers and responses, "the example should serve and ask for a recommendation"
    body = responses[-1].json()
    assert responses[-1].status_code == 200, body
    catalogue = {line.split(",")[0] for line in files["items.csv"].splitlines()[1:]}
    assert body["user_id"] == "u1" and 0 < len(body["items"]) <= 3
    assert {item["item_id"] for item in body["items"]} <= catalogue
    assert all(item["title"] and item["reason"] for item in body["items"])
    # what the page says about the next steps: the graph ranks the item nobody bought
    recommended = [out for args, out in outputs if args[:2] == ["kinrec", "recommend"]]
    assert recommended and "Hojicha" in recommended[-1]
    assert os.path.exists(tmp_path / "shop.db")


def test_the_guide_is_linked_from_the_readme() -> None:
    readme = (DOC.parents[1] / "README.md").read_text(encoding="utf-8")
    assert "docs/data.md" in readme
