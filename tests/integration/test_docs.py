"""The project documents itself: every link and every reference in docs, errors and docstrings points
inside the repository (a user who clones it has nothing else)."""

from __future__ import annotations

import re
import subprocess

from tests.helpers.stagerun import REPO

#: documents that were never part of the project; naming them sends a user nowhere
OUTSIDE = re.compile(r"\b(DATA|DESIGN|STYLE|DEVELOPERS)\.md\b|\.\./shared\b")
LINK = re.compile(r"\[[^\]]*\]\(([^)#\s]+)(?:#[^)]*)?\)")
TEXT_SUFFIXES = {".py", ".md", ".yaml", ".yml", ".toml", ".sh", ".txt", ".cfg"}


def tracked_text_files() -> list:
    listing = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout
    files = [REPO / rel for rel in filter(None, listing.split("\0"))]
    return [
        f for f in files if f.is_file() and (f.suffix in TEXT_SUFFIXES or f.name == "run") and f.name != "test_docs.py"
    ]


def test_no_reference_to_documents_outside_the_repository():
    found = []
    for path in tracked_text_files():
        for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if OUTSIDE.search(line):
                found.append(f"{path.relative_to(REPO)}:{number}: {line.strip()[:120]}")
    assert not found, "references to files that are not in the repository:\n" + "\n".join(found)


def test_relative_markdown_links_resolve():
    broken = []
    for path in tracked_text_files():
        if path.suffix != ".md":
            continue
        for target in LINK.findall(path.read_text(encoding="utf-8")):
            if re.match(r"^[a-z]+:", target):  # http:, https:, mailto:
                continue
            if not (path.parent / target).exists():
                broken.append(f"{path.relative_to(REPO)} -> {target}")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_the_data_doc_lists_all_27_classes():
    from rakuten.contracts.classes import CLASS_CODES, CLASS_LABELS

    doc = (REPO / "docs" / "data.md").read_text(encoding="utf-8")
    for code in CLASS_CODES:
        assert f"| {code} | {CLASS_LABELS[code]} |" in doc, code
