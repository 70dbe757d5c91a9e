"""The front page and the documentation site's sources: what the README shows runs, what it links
to exists, and the site's pages are where the README sends a reader. The site itself is built by
`make docs` (CI runs it: warnings are errors, the notebooks and the guides' code run as it builds)."""

import re
import subprocess
import sys

import pytest

from tests.helpers import ROOT

README = ROOT / "README.md"
GUIDES = ROOT / "docs" / "guides"


def test_the_readme_python_example_runs():
    code = re.search(r"```python\n(.*?)```", README.read_text(), re.S).group(1)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr


def test_every_relative_link_of_the_readme_exists():
    links = re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", README.read_text())
    assert links, "the README links into the documentation"
    missing = [link for link in links if not (ROOT / link).exists()]
    assert not missing, f"README links to files that do not exist: {missing}"


def test_the_readme_links_every_guide():
    linked = set(re.findall(r"\]\(docs/guides/([^)]+)\)", README.read_text()))
    pages = {p.name for p in GUIDES.iterdir() if p.suffix in (".md", ".rst")}
    assert linked == pages, f"guides not on the front page: {pages - linked}; links to no guide: {linked - pages}"


def test_the_readme_make_targets_exist():
    targets = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.M))
    used = set(re.findall(r"`make ([\w-]+)", README.read_text()))
    assert used and used <= targets, used - targets


@pytest.mark.parametrize("page", sorted(p.name for p in GUIDES.glob("*.md")))
def test_a_guide_is_in_the_sites_table_of_contents(page):
    assert f"guides/{page.removesuffix('.md')}" in (ROOT / "docs" / "index.md").read_text()
