"""Sphinx configuration of the apex-hub documentation (MyST markdown, pydata theme).

Builds offline: no intersphinx inventories and no remote assets are fetched; the reference pages
are generated from the code at build time (``_ext/apex_docs.py``).
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))
sys.path.insert(0, str(HERE.parent))

import apex_hub  # noqa: E402

project = "apex-hub"
author = "ESA APEx"
copyright = "ESA APEx"
release = apex_hub.__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "autodoc_traits",
    "apex_docs",
]

source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "local-mode", "Thumbs.db", ".DS_Store"]

# option names such as --node-modules stay as written (no en dashes)
smartquotes = False

myst_enable_extensions = ["colon_fence", "deflist", "fieldlist"]
# heading anchors so that pages can link to #sections of other pages
myst_heading_anchors = 4

# autodoc-traits: the configuration reference lists the traits with config=True
autodoc_default_options = {"members": False}

# the README's local-mode screenshots stay in docs/local-mode/ (the README links them)
html_theme = "pydata_sphinx_theme"
html_title = f"apex-hub {release}"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
}
html_static_path: list[str] = []

# `sphinx-build -b linkcheck docs docs/_build/linkcheck` (by hand, with network; tests never fetch):
# addresses that are examples, loopback or this site's own future home are not checked.
linkcheck_ignore = [
    r"https?://127\.0\.0\.1[:/]",
    r"https?://localhost[:/]",
    r"https?://[^/]*example\.(org|com)(/|$)",
    r"https://esa-apex\.github\.io/apex-hub/",
]
linkcheck_timeout = 20
linkcheck_retries = 2
