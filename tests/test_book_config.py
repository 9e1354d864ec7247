"""Checks of the Jupyter Book configuration, the bibliography and the CI workflows.

These catch, in a second, mistakes that would otherwise surface only in the
book build (a citation key that does not exist) or only on the published site
(a Colab button that points at the wrong repository).
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

import mtl_course

ROOT = Path(__file__).resolve().parent.parent
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
CITE_RE = re.compile(r"\{cite(?::[a-z]+)?\}`([^`]+)`")
BIBLIOGRAPHY_RE = re.compile(r"^\s*(```|:::)\s*\{bibliography\}", re.M)


def _bibfiles() -> list[Path]:
    return [ROOT / name for name in CONFIG.get("bibtex_bibfiles", [])]


def _markdown_sources() -> dict[str, str]:
    """Text of every markdown page and notebook markdown cell that can reach the book."""
    texts = {}
    for folder in ("book", "exercises", "solutions"):
        for path in sorted((ROOT / folder).glob("*.md")):
            texts[path.relative_to(ROOT).as_posix()] = path.read_text(encoding="utf-8")
        for path in sorted((ROOT / folder).glob("*.ipynb")):
            nb = json.loads(path.read_text(encoding="utf-8"))
            cells = [c for c in nb.get("cells", []) if c.get("cell_type") == "markdown"]
            texts[path.relative_to(ROOT).as_posix()] = "\n".join(
                "".join(c["source"]) if isinstance(c["source"], list) else c["source"] for c in cells
            )
    return texts


# --------------------------------------------------------------------------------------
# _config.yml
# --------------------------------------------------------------------------------------

def test_colab_launch_button_and_repository():
    assert CONFIG["launch_buttons"]["colab_url"] == "https://colab.research.google.com"
    repo = CONFIG["repository"]
    assert repo["url"] == mtl_course.REPOSITORY, "repository.url must be mtl_course.REPOSITORY"
    assert repo["branch"] == "main"
    # The book root is the repository root, so a page's Colab URL is
    # .../blob/main/<path of the notebook>, the same URL as the notebook's badge.
    assert repo.get("path_to_book", "") == ""
    assert CONFIG["html"]["use_repository_button"] is True
    assert CONFIG["html"]["use_issues_button"] is True


def test_sphinx_reads_only_the_book():
    assert CONFIG["only_build_toc_files"] is True
    excluded = set(CONFIG["exclude_patterns"])
    for name in ("_build", ".venv", "solutions", "tests", "benchmarks", "README.md", "CONTRIBUTING.md"):
        assert name in excluded, f"add {name!r} to exclude_patterns in _config.yml"


def test_execution_settings():
    execute = CONFIG["execute"]
    assert execute["execute_notebooks"] == "force", "`make book` must execute every chapter"
    assert "exercises/*" in execute["exclude_patterns"], "exercises must not be executed by the book build"
    assert execute.get("allow_errors", False) is False


def test_makefile_override_to_stored_outputs_survives_yaml():
    """`make test` rewrites execute_notebooks to 'off' with PyYAML; it must stay the string 'off'."""
    config = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
    config["execute"]["execute_notebooks"] = "off"
    again = yaml.safe_load(yaml.safe_dump(config))
    assert again["execute"]["execute_notebooks"] == "off"
    assert again == config


def test_no_extension_needs_the_network():
    config = CONFIG.get("sphinx", {}).get("config", {}) or {}
    assert not config.get("intersphinx_mapping"), "intersphinx fetches inventories: the build must be offline"
    extensions = CONFIG.get("sphinx", {}).get("extra_extensions") or []
    assert "sphinx.ext.intersphinx" not in extensions


# --------------------------------------------------------------------------------------
# Bibliography
# --------------------------------------------------------------------------------------

def test_bibtex_files_exist_and_parse():
    from pybtex.database import parse_file

    files = _bibfiles()
    assert files, "bibtex_bibfiles is empty in _config.yml"
    for path in files:
        assert path.is_file(), f"{path.relative_to(ROOT)} (bibtex_bibfiles) does not exist"
        data = parse_file(str(path), bib_format="bibtex")
        assert data.entries, f"{path.relative_to(ROOT)} has no entries"
        for key, entry in data.entries.items():
            assert entry.persons.get("author") or entry.persons.get("editor"), f"{key}: no author"
            assert entry.fields.get("title"), f"{key}: no title"
            assert re.fullmatch(r"\d{4}", entry.fields.get("year", "")), f"{key}: no 4-digit year"


def test_bibtex_keys_are_unique():
    for path in _bibfiles():
        keys = re.findall(r"^@\w+\{\s*([^,\s]+)\s*,", path.read_text(encoding="utf-8"), re.M)
        duplicates = sorted({k for k in keys if keys.count(k) > 1})
        assert not duplicates, f"{path.relative_to(ROOT)}: duplicate keys {duplicates}"


def test_every_cited_key_exists():
    from pybtex.database import parse_file

    known = set()
    for path in _bibfiles():
        known |= set(parse_file(str(path), bib_format="bibtex").entries.keys())
    missing = {}
    for name, text in _markdown_sources().items():
        for group in CITE_RE.findall(text):
            for key in (k.strip() for k in group.split(",")):
                if key and key not in known:
                    missing.setdefault(name, []).append(key)
    assert not missing, f"citation keys not in book/references.bib: {missing}"


def test_intro_cites_the_review():
    intro = (ROOT / "book" / "intro.md").read_text(encoding="utf-8")
    keys = {k.strip() for group in CITE_RE.findall(intro) for k in group.split(",")}
    assert "upadhyay2021sharing" in keys


def test_one_bibliography_page():
    """A second {bibliography} directive would list entries twice (duplicate-label warnings)."""
    pages = [name for name, text in _markdown_sources().items() if BIBLIOGRAPHY_RE.search(text)]
    assert pages == ["book/bibliography.md"], (
        f"only book/bibliography.md may hold a {{bibliography}} directive; found it in {pages}"
    )


# --------------------------------------------------------------------------------------
# Table of contents and CI
# --------------------------------------------------------------------------------------

def test_toc_shape():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8"))
    assert toc["format"] == "jb-book"
    assert toc["root"] == "book/intro"
    captions = [part.get("caption") for part in toc.get("parts", [])]
    assert "Chapters" in captions and "Exercises" in captions, captions


@pytest.mark.parametrize("workflow, target", [("test.yml", "make test"), ("book.yml", "make book")])
def test_ci_workflows_call_the_makefile(workflow, target):
    path = ROOT / ".github" / "workflows" / workflow
    if not path.is_file():
        pytest.skip(f"{path.relative_to(ROOT)} not present")
    text = path.read_text(encoding="utf-8")
    runs = [line.split("run:", 1)[1].strip() for line in text.splitlines() if "run:" in line]
    assert target in runs, f"{workflow} must run `{target}` (found runs: {runs})"
