"""mkdocs hooks (``hooks:`` in mkdocs.yml) for the documentation site.

* The measured tables in ``benchmarks/results/*.md`` (and their plots) become pages of the
  site under ``results/``, so that the docs link to them and a strict build checks the links.
  In the docs they are linked as ``../benchmarks/results/NAME.md``, which also works when the
  Markdown is read in the repository; the hook points those links at the generated pages.
* A fence that names its file (```` ```csv interactions.csv ````, the form the tests read
  the data guide's example files from) gets the file name as a caption, since Markdown
  fences take a language only.
"""

from __future__ import annotations

import re
from pathlib import Path

from mkdocs.structure.files import File, Files, InclusionLevel

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
RESULTS_LINK = re.compile(r"\]\(\.\./benchmarks/results/")
NAMED_FENCE = re.compile(r"^```(\w+) +(\S+)[ \t]*$", re.MULTILINE)


def on_files(files: Files, config) -> Files:
    for path in sorted(RESULTS.iterdir()):
        uri = f"results/{path.name}"
        if path.suffix == ".md":
            text = path.read_text(encoding="utf-8")
            files.append(
                File.generated(config, uri, content=text, inclusion=InclusionLevel.NOT_IN_NAV)
            )
        elif path.suffix == ".png":
            files.append(File.generated(config, uri, abs_src_path=str(path)))
    return files


def on_page_markdown(markdown: str, page, config, files) -> str:
    up = "../" * page.file.src_uri.count("/")
    markdown = RESULTS_LINK.sub(f"]({up}results/", markdown)
    return NAMED_FENCE.sub(lambda m: f"`{m.group(2)}`:\n\n```{m.group(1)}", markdown)
