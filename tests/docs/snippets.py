"""The code blocks of the project's Markdown documents, found as a Markdown reader finds them
(markdown-it-py, CommonMark), with the markers that say how a block is run.

A fenced block whose info string starts with ``python``/``py`` is Python, ``sh``/``bash``/``shell``
/``console`` a shell script; other blocks (``json``, ``yaml``, plain text) are not run. An HTML
comment on the line just before a block changes how it is run:

- ``<!-- snippet: skip REASON -->`` — not run; the reason is required and the docs test lists it;
- ``<!-- snippet: file NAME -->`` — not run but written to ``NAME`` in the document's working
  directory, for a later block to run (``python verify_chain.py audit.jsonl``).

Within one document, blocks run in order, Python blocks in one shared namespace (a later block
uses the ``client`` an earlier one built), each shell block in ``bash -euo pipefail``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from markdown_it import MarkdownIt

__all__ = ["MarkerError", "Snippet", "documents", "snippets"]

PYTHON = frozenset({"python", "py", "python3"})
SHELL = frozenset({"sh", "bash", "shell", "console"})
_MARKER = re.compile(r"^<!--\s*snippet:\s*(?P<verb>\S+)\s*(?P<arg>.*?)\s*-->\s*$", re.DOTALL)


class MarkerError(ValueError):
    """A ``<!-- snippet: ... -->`` marker that says nothing usable (unknown verb, no reason)."""


@dataclass(frozen=True, slots=True)
class Snippet:
    path: Path
    line: int  # of the opening fence, 1-based
    language: str  # "python", "shell" or "" (not run)
    code: str
    skip: str | None = None  # the reason, when marked skip
    file: str | None = None  # the file name, when marked file

    @property
    def where(self) -> str:
        return f"{self.path.name}:{self.line}"

    @property
    def runs(self) -> bool:
        return self.language != "" and self.skip is None and self.file is None


def documents(root: Path) -> list[Path]:
    """Every document whose code blocks are checked: the READMEs and ``docs/*.md``."""
    found = [root / "README.md", root / "sdk" / "README.md", *sorted((root / "docs").glob("*.md"))]
    return [p for p in found if p.is_file()]


def snippets(path: Path) -> list[Snippet]:
    """The fenced code blocks of ``path`` in order, each with its marker applied."""
    tokens = MarkdownIt("commonmark").parse(path.read_text(encoding="utf-8"))
    out: list[Snippet] = []
    marker: tuple[str, str, int] | None = None  # (verb, argument, the line after the comment)
    for token in tokens:
        if token.type == "html_block" and token.map is not None:
            found = _MARKER.match(token.content.strip())
            if found:
                marker = (found["verb"], found["arg"], token.map[1])
                continue
        if token.type in ("fence", "code_block") and token.map is not None:
            info = token.info.strip().split()
            kind = info[0].lower() if info and token.type == "fence" else ""
            language = "python" if kind in PYTHON else "shell" if kind in SHELL else ""
            skip = file = None
            if marker is not None and marker[2] == token.map[0]:
                verb, arg, _ = marker
                if verb == "skip":
                    if not arg:
                        raise MarkerError(f"{path.name}:{token.map[0]}: 'snippet: skip' needs a reason")
                    skip = arg
                elif verb == "file":
                    if not re.fullmatch(r"[\w.-]+", arg):
                        raise MarkerError(f"{path.name}:{token.map[0]}: 'snippet: file' needs a plain file name")
                    file = arg
                else:
                    raise MarkerError(f"{path.name}:{token.map[0]}: unknown marker 'snippet: {verb}'")
            out.append(Snippet(path, token.map[0] + 1, language, token.content, skip, file))
        marker = None
    return out
