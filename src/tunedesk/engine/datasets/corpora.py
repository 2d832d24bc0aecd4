"""Language-model corpora: plain-text files cut into passages, and chat conversations (JSONL).

Stored now so users can collect and clean them; trained by the causal language-model task, which
reads a version with ``load_corpus_version`` / ``load_chat_version``.

A passage is a run of non-blank lines (a paragraph); one longer than ``MAX_PASSAGE_CHARS`` is cut
at line ends so no single item grows unbounded. Chat items store the conversation as canonical JSON
``{"messages": [{"role": ..., "content": ...}, ...]}``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

from tunedesk.engine.data.report import DataReport
from tunedesk.engine.data.text import iter_table_records
from tunedesk.engine.errors import DataError
from tunedesk.engine.lm.chat_format import normalise_record

TEXT_SUFFIXES = (".txt", ".text", ".md")
MAX_PASSAGE_CHARS = 20_000


def list_text_files(path: Path) -> list[Path]:
    """A .txt file, or every .txt/.md file under a folder (sorted; hidden files and symlinked folders
    skipped, so a link loop cannot hang the walk)."""
    if not path.exists():
        raise DataError(f"not found: {path}", "choose a .txt file or a folder of .txt files")
    if path.is_file():
        if not path.name.lower().endswith(TEXT_SUFFIXES):
            raise DataError(
                f"{path.name} is not a plain-text file",
                "choose a .txt file (or .md), or a folder of them; chat data goes in as chat JSONL",
            )
        return [path]
    files: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(path, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        files += [
            Path(dirpath) / f for f in sorted(filenames) if not f.startswith(".") and f.lower().endswith(TEXT_SUFFIXES)
        ]
    if not files:
        raise DataError(f"no .txt files in {path.name or path}", "put the corpus in .txt files (UTF-8) in that folder")
    return files


def iter_passages(path: Path, encoding: str) -> Iterator[tuple[int, str]]:
    """Yield ``(first line, passage)`` for each paragraph of a text file, streaming."""
    lines: list[str] = []
    size = 0
    start = 0
    with open(path, encoding=encoding) as fh:
        for lineno, raw in enumerate(fh, 1):
            if lineno == 1:
                raw = raw.lstrip("\ufeff")
            line = raw.rstrip("\r\n")
            if not line.strip():
                if lines:
                    yield start, "\n".join(lines)
                    lines, size = [], 0
                continue
            if not lines:
                start = lineno
            lines.append(line)
            size += len(line) + 1
            if size >= MAX_PASSAGE_CHARS:
                yield start, "\n".join(lines)
                lines, size = [], 0
    if lines:
        yield start, "\n".join(lines)


def iter_chat_records(path: Path, encoding: str, report: DataReport) -> Iterator[tuple[int, str, str]]:
    """Yield ``(line, canonical JSON, plain text)`` of each valid conversation (any shape
    ``chat_format`` reads: messages, ShareGPT, prompt/response pairs); skip and report the rest.
    Raises DataError when no line looks like a conversation at all (the wrong kind of file)."""
    seen = False
    for line, _, value in iter_table_records(path, encoding, "jsonl", report):
        report.rows_read += 1
        messages, reason = normalise_record(value)
        if messages is None:
            report.add(reason, line)
            if report.rows_read >= 200 and not seen:
                break
            continue
        seen = True
        text = json.dumps({"messages": messages}, ensure_ascii=False)
        plain = "\n".join(f"{m['role']}: {m['content']}" for m in messages)
        yield line, text, plain
    if report.rows_read and not seen and any(i.reason.startswith("unknown format") for i in report.issues):
        raise DataError(
            f"{path.name} holds no conversations: no line has 'messages' or a prompt/response pair",
            'chat JSONL needs one conversation per line: {"messages": [{"role": "user", "content": "..."}, '
            '{"role": "assistant", "content": "..."}]} or {"prompt": "...", "response": "..."}; '
            "for labelled texts use the text table import",
        )
