"""The docs stay true: docs/ against the code and the citations in the tree. Reads files only.

- every ``CRYPTICS_*`` variable of ``Settings`` and of every component config is in a table of
  docs/operations.md with its default, and every variable those tables name exists;
- every citation ``docs/<name>.md#<anchor>`` resolves to a heading of that file (GitHub's
  anchor of it), and every ``docs/thalex-protocol.md §N[.M]`` to a numbered heading;
- every repository path a doc names in backticks exists, and docs/architecture.md names every
  package of app/ and every agent;
- the README leads to docs/architecture.md first, and links nothing outside the repository;
- nothing cites a document the repository does not have: every Markdown file a file names
  exists here, no path leads out of the checkout, and a decision is cited by its anchor in
  docs/architecture.md, not by a bare number: a user of the project has only the repository.

Files are found by walking the project's folders, skipping what git ignores (the virtual
environment, build output, caches, generated C and compiled modules, node_modules).
"""
from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from app.config import PREFIX
from app.settings import COMPONENTS, Settings

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
OPERATIONS = DOCS / "operations.md"

#: Where the citations live: the tracked source folders and files of the project.
SOURCE_DIRS = ("app", "agents", "models", "benchmarks", "tests", "timescale", "schemas", "grafana", "docs", ".ci")
SOURCE_FILES = ("setup.cfg", "pyproject.toml", "setup.py", "dev.sh", "Dockerfile", "docker-compose.yml",
                "README.md", ".gitignore")
#: Folders git ignores (or that hold no source): never walked.
SKIP_DIRS = {".venv", "node_modules", "build", "dist", "__pycache__", ".git", ".hypothesis", ".ruff_cache",
             ".pytest_cache", ".benchmarks", ".cryptics"}
#: Files git ignores or that are not text: generated C (app/**/*.c), compiled modules, bytecode.
SKIP_SUFFIXES = {".so", ".c", ".pyc", ".pyo", ".gz", ".png", ".jpg", ".ico"}


def _source_files() -> Iterator[Path]:
    for name in SOURCE_FILES:
        if (ROOT / name).is_file():
            yield ROOT / name
    for folder in SOURCE_DIRS:
        base = ROOT / folder
        if not base.is_dir():
            continue
        for path in sorted(base.rglob("*")):
            parts = set(path.relative_to(ROOT).parts)
            if parts & SKIP_DIRS or any(p.endswith(".egg-info") for p in parts) or not path.is_file():
                continue
            if path.suffix in SKIP_SUFFIXES:
                continue
            yield path


def _text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return ""


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


# -- GitHub's heading anchors -------------------------------------------------------------------

_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$")
_LINK = re.compile(r"\[([^\]]*)\]\([^)]*\)")


def anchor(heading: str) -> str:
    """GitHub's anchor of a heading: the text as rendered (links and code marks dropped),
    lower-cased, punctuation other than hyphens and underscores removed, spaces to hyphens."""
    text = _LINK.sub(r"\1", heading).replace("`", "")
    text = text.strip().lower()
    text = "".join(ch for ch in text if ch.isalnum() or ch in " -_")
    return text.replace(" ", "-")


@functools.cache
def headings(path: Path) -> tuple[str, ...]:
    """The heading texts of a Markdown file, code blocks skipped."""
    found, fenced = [], False
    for line in _text(path).splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        match = None if fenced else _HEADING.match(line)
        if match:
            found.append(match.group(2))
    return tuple(found)


@functools.cache
def anchors(path: Path) -> frozenset[str]:
    """Every anchor GitHub gives the headings of ``path`` (a repeated one gets -1, -2, …)."""
    seen: dict[str, int] = {}
    out = set()
    for heading in headings(path):
        base = anchor(heading)
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return frozenset(out)


def test_anchor_follows_githubs_rule():
    assert anchor("D1. The hot path stays in one process") == "d1-the-hot-path-stays-in-one-process"
    assert anchor("D6. Embedded broker: Tansu") == "d6-embedded-broker-tansu"
    assert anchor("4.7 Mass quoting and market-maker protection") == "47-mass-quoting-and-market-maker-protection"
    assert anchor("Strategy parameters: `CRYPTICS_QUOTE_*`") == "strategy-parameters-cryptics_quote_"
    assert anchor("What `cryptics up` prints") == "what-cryptics-up-prints"


# -- 1. every variable with its default in docs/operations.md -----------------------------------

def variables() -> dict[str, dataclasses.Field]:
    """Every ``CRYPTICS_*`` variable that app/settings.py reads, with its field, built the way
    Settings.from_env builds them: Settings' own fields, then each component's with its infix."""
    out = {}
    for f in dataclasses.fields(Settings):
        if f.init and f.name not in COMPONENTS:
            out[f"{PREFIX}{f.name.upper()}"] = f
    for infix, config_class in COMPONENTS.values():
        for f in dataclasses.fields(config_class):
            if f.init:
                out[f"{PREFIX}{infix}{f.name.upper()}"] = f
    return out


def default_of(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return None


def written_defaults(value: Any) -> set[str]:
    """How a default may be written in the docs, as one would set the variable."""
    if value is None:
        return set()
    if isinstance(value, bool):
        return {"true", "1"} if value else {"false", "0"}
    if isinstance(value, tuple):
        return {",".join(repr(v) for v in value)}
    if isinstance(value, Path):
        return {value.as_posix(), "./" + value.as_posix()}
    if isinstance(value, float):
        forms = {repr(value)}
        if value.is_integer():
            forms.add(str(int(value)))
        return forms
    return {str(value)}


def variable_rows() -> dict[str, list[str]]:
    """Table rows of docs/operations.md whose first cell is one `CRYPTICS_*` name: name → cells."""
    rows = {}
    for line in _text(OPERATIONS).splitlines():
        if not line.startswith("|"):
            continue
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
        match = re.fullmatch(r"`(CRYPTICS_[A-Z0-9_]+)`", cells[0]) if cells else None
        if match:
            rows[match.group(1)] = cells
    return rows


def test_every_variable_is_documented_with_its_default():
    rows = variable_rows()
    missing, wrong = [], []
    for name, f in variables().items():
        cells = rows.get(name)
        if cells is None:
            missing.append(name)
            continue
        forms = written_defaults(default_of(f))
        if len(cells) < 3 or not cells[1] or not cells[2]:
            wrong.append(f"{name}: the row needs a default and a meaning: {cells}")
        elif forms and not any(f"`{form}`" == cells[1] for form in forms):
            wrong.append(f"{name}: default cell {cells[1]!r}, expected one of {sorted(f'`{x}`' for x in forms)}")
    assert not missing, f"docs/operations.md has no table row for: {', '.join(missing)}"
    assert not wrong, "docs/operations.md shows the wrong default:\n" + "\n".join(wrong)


def test_every_documented_variable_exists():
    known = set(variables())
    stale = sorted(name for name in variable_rows() if name not in known)
    assert not stale, f"docs/operations.md documents variables the code does not read: {', '.join(stale)}"


# -- 2. citations resolve ------------------------------------------------------------------------

_ANCHOR_CITATION = re.compile(r"docs/([A-Za-z0-9_-]+\.md)#([\w-]+)((?:\s*,\s*#[\w-]+)*)")
_SECTION_CITATION = re.compile(
    r"docs/thalex-protocol\.md\s*((?:§\s*\d+(?:\.\d+)?(?:\s*[–-]\s*\d+(?:\.\d+)?)?(?:\s*(?:,|and|or)\s*)?)+)")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def citations() -> Iterator[tuple[str, int, str, str]]:
    """(file, line, doc, anchor) of every ``docs/<doc>.md#<anchor>`` citation."""
    for path in _source_files():
        for number, line in enumerate(_text(path).splitlines(), 1):
            for match in _ANCHOR_CITATION.finditer(line):
                more = re.findall(r"#([\w-]+)", match.group(3))
                for target in (match.group(2), *more):
                    yield _rel(path), number, match.group(1), target


def section_citations() -> Iterator[tuple[str, int, str]]:
    """(file, line, section number) of every ``docs/thalex-protocol.md §N[.M]`` citation
    (ranges and lists such as ``§4.4–4.6, §6.1`` give each number)."""
    for path in _source_files():
        for number, line in enumerate(_text(path).splitlines(), 1):
            for match in _SECTION_CITATION.finditer(line):
                for section in _NUMBER.findall(match.group(1)):
                    yield _rel(path), number, section


def numbered_sections(path: Path) -> set[str]:
    """Section numbers of the numbered headings ("4.7 Mass quoting…", "10. Discrepancies…")."""
    out = set()
    for heading in headings(path):
        match = re.match(r"(\d+(?:\.\d+)?)\.?\s", heading)
        if match:
            out.add(match.group(1))
    return out


def test_anchor_citations_resolve_to_headings():
    broken = []
    for where, line, doc, target in citations():
        path = DOCS / doc
        if not path.is_file():
            broken.append(f"{where}:{line}: docs/{doc} does not exist")
        elif target not in anchors(path):
            broken.append(f"{where}:{line}: docs/{doc}#{target} is no heading of docs/{doc}")
    assert not broken, "citations that do not resolve:\n" + "\n".join(broken)


def test_protocol_section_citations_resolve_to_numbered_headings():
    sections = numbered_sections(DOCS / "thalex-protocol.md")
    broken = [f"{where}:{line}: §{section}" for where, line, section in section_citations() if section not in sections]
    assert not broken, ("docs/thalex-protocol.md has no numbered heading for:\n" + "\n".join(broken))


def test_protocol_doc_keeps_the_section_numbers():
    sections = numbered_sections(DOCS / "thalex-protocol.md")
    expected = {"0", "1", "2", "3", "4", "5", "6", "7", "10",
                *(f"1.{i}" for i in range(1, 6)), *(f"2.{i}" for i in range(1, 4)),
                *(f"3.{i}" for i in range(1, 8)), *(f"4.{i}" for i in range(1, 12)),
                *(f"5.{i}" for i in range(1, 7)), *(f"6.{i}" for i in range(1, 4)),
                *(f"7.{i}" for i in range(1, 4))}
    assert expected <= sections, f"missing sections: {sorted(expected - sections)}"


def test_the_decisions_are_headings_of_the_architecture():
    found = anchors(DOCS / "architecture.md")
    decisions = [
        "d1-the-hot-path-stays-in-one-process", "d2-one-active-quoter-per-venue-account", "d3-kafka-topics",
        "d4-avro-and-schemas", "d5-schema-registry", "d6-embedded-broker-tansu", "d7-database",
        "d8-persistence-semantics", "d9-latency-stamps", "d10-settings",
        "d11-analytics-tables-are-exact-under-at-least-once", "d12-web-views", "d13-metrics",
        "d14-dashboards-are-code", "d15-backtests-run-the-live-strategy-code",
        "d16-the-repository-documents-itself",
    ]
    missing = [d for d in decisions + ["the-hot-path", "the-pipeline", "decisions"] if d not in found]
    assert not missing, f"docs/architecture.md lacks the headings: {missing}"


def test_links_between_docs_resolve():
    broken = []
    for path in [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]:
        for number, line in enumerate(_text(path).splitlines(), 1):
            for target in re.findall(r"\]\(([^)\s]+)\)", line):
                if re.match(r"[a-z]+:", target):
                    continue  # an address outside the repository (the README has none: see below)
                file_part, _, fragment = target.partition("#")
                linked = (path.parent / file_part).resolve() if file_part else path
                if not linked.exists():
                    broken.append(f"{_rel(path)}:{number}: {target}: no such file")
                elif fragment and linked.suffix == ".md" and fragment not in anchors(linked):
                    broken.append(f"{_rel(path)}:{number}: {target}: no such heading")
    assert not broken, "links that do not resolve:\n" + "\n".join(broken)


# -- 3. the paths the docs name exist -----------------------------------------------------------

_PATH = re.compile(r"`((?:app|agents|models|schemas|timescale|grafana|tests|benchmarks|docs)/[^`\s]*)`")


def test_paths_named_in_the_docs_exist():
    missing = []
    for path in [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]:
        for number, line in enumerate(_text(path).splitlines(), 1):
            for named in _PATH.findall(line):
                if any(ch in named for ch in "<>*{}…"):
                    continue  # a pattern such as schemas/<record>/vN.avsc
                if not (ROOT / named.split("#")[0]).exists():
                    missing.append(f"{_rel(path)}:{number}: {named}")
    assert not missing, "the docs name paths that do not exist:\n" + "\n".join(missing)


def test_the_layout_names_every_package_and_agent():
    """A newcomer goes from a part to its module in one step: docs/architecture.md names every
    package of app/ and every agent module."""
    named = set(_PATH.findall(_text(DOCS / "architecture.md")))
    wanted = [_rel(p.parent) + "/" for p in sorted((ROOT / "app").rglob("__init__.py"))
              if not set(p.relative_to(ROOT).parts) & SKIP_DIRS and p.parent != ROOT / "app"]
    wanted += [_rel(p) for p in sorted((ROOT / "agents").glob("*.py")) if p.name != "__init__.py"]
    missing = [path for path in wanted if path not in named]
    assert not missing, f"docs/architecture.md does not name: {', '.join(missing)}"


# -- 4. the README ------------------------------------------------------------------------------

def test_readme_leads_to_the_architecture_and_stays_in_the_repository():
    readme = _text(ROOT / "README.md")
    links = re.findall(r"\]\(([^)\s]+)\)", readme)
    assert links and links[0] == "docs/architecture.md", f"the README's first link must be docs/architecture.md: {links[:3]}"
    for doc in ("docs/architecture.md", "docs/operations.md", "docs/thalex-protocol.md", "docs/benchmarks.md"):
        assert doc in links, f"the README does not link {doc}"
    outside = [link for link in links if re.match(r"[a-z]+:", link)]
    assert not outside, f"the README links outside the repository: {outside}"


def test_the_layout_step_section_is_there():
    assert "layout-step-issue-12-before-and-after" in anchors(DOCS / "benchmarks.md")


# -- 5. no citation of documents the repository does not have -----------------------------------

#: A path that leads out of the checkout: up from it, or an absolute path of a machine.
_LEAVES = re.compile(r"(?<![\w.])\.\./[\w.-]+/|(?<![\w.])/(?:work|home|root|tmp)/[\w.-]+/")
#: A design decision cited by its bare number ("decision D7" style), not by its anchor.
_BARE_DECISION = re.compile(r"\bdesign\s+D\d+", re.IGNORECASE)
_MARKDOWN_NAME = re.compile(r"[\w./-]*[\w-]\.md\b")


@functools.lru_cache(maxsize=1)
def _markdown_files() -> frozenset[str]:
    """Every Markdown file of the repository, by path and by bare name."""
    found = {p for p in _source_files() if p.suffix == ".md"}
    return frozenset({_rel(p) for p in found} | {p.name for p in found})


def _missing_documents(path: Path, line: str) -> list[str]:
    missing = []
    for name in _MARKDOWN_NAME.findall(line):
        if name in _markdown_files():
            continue
        relative = (path.parent / name).resolve()
        if relative.is_file() and relative.is_relative_to(ROOT):
            continue
        missing.append(name)
    return missing


def _outside_citations(path: Path) -> list[str]:
    offending = []
    for number, line in enumerate(_text(path).splitlines(), 1):
        reasons = _missing_documents(path, line)
        if _LEAVES.search(line):
            reasons.append("a path out of the repository")
        if _BARE_DECISION.search(line):
            reasons.append("a decision by its bare number")
        if reasons:
            offending.append(f"{_rel(path)}:{number}: {', '.join(reasons)}: {line.strip()[:120]}")
    return offending


def test_the_rule_catches_what_it_is_for(tmp_path):
    """The check itself can fail: a note outside the tree, a path up and out, a bare decision."""
    sample = ROOT / "app" / "sample.py"  # as if it were in the tree (nothing is written there)
    assert _missing_documents(sample, "see notes.md §3 and docs/architecture.md") == ["notes.md"]
    assert _missing_documents(sample, "docs/thalex-protocol.md §4.7, README.md") == []
    assert _LEAVES.search("as ../elsewhere/notes say") and not _LEAVES.search("docs/operations.md")
    assert _BARE_DECISION.search("(design D8)") and not _BARE_DECISION.search("#d8-persistence-semantics")


def test_nothing_cites_documents_the_repository_does_not_have():
    offending = []
    for path in _source_files():
        if path == Path(__file__).resolve():
            continue  # its samples of what the rule refuses, above
        if path.suffix == ".avsc":
            # A published schema version is immutable: its text (doc strings included) is its
            # identity in the registry. Its protocol section numbers are those of
            # docs/thalex-protocol.md, as schemas/CHANGELOG.md says.
            continue
        offending += _outside_citations(path)
    assert not offending, (
        f"{len(offending)} lines cite what is not in the repository; cite a decision's anchor in "
        "docs/architecture.md, or a section number of docs/thalex-protocol.md, instead:\n"
        + "\n".join(offending))
