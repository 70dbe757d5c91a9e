"""Sphinx configuration of snn's documentation site: `make docs` builds it into docs/_build/html.

The build is offline: no intersphinx, MathJax served from the sphinx-mathjax-offline package, the
notebooks executed here by a local kernel. Warnings are errors (`make docs` passes -W), so a
broken cross-reference in a docstring, a stale config name or a failing notebook cell fails it.
"""

import os
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
sys.path.insert(0, str(ROOT))  # this checkout's snn, not whichever one is installed
sys.path.insert(0, str(DOCS / "_ext"))
# The notebook kernels inherit the environment: the same snn, and the notebooks' quick mode
# (SNN_NOTEBOOK_QUICK, read in their parameter cells) so the whole site builds in minutes.
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
os.environ["SNN_NOTEBOOK_QUICK"] = "1"
os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")

project = "snn"
author = "snn contributors"
copyright = "snn contributors"

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "myst_nb",
    "snn_configs",  # docs/_ext/snn_configs.py: the configs reference, generated from conf/
    "snn_api",  # docs/_ext/snn_api.py: the public names of each package, and links to them
]

source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store", "**.ipynb_checkpoints"]
templates_path = ["_templates"]

# --- Offline maths: MathJax 3 from the sphinx-mathjax-offline wheel, copied into _static/.
import importlib.util  # noqa: E402

_mathjax = importlib.util.find_spec("sphinx-mathjax-offline")
if _mathjax is None or not _mathjax.origin:
    raise RuntimeError('MathJax is served locally from sphinx-mathjax-offline: pip install -e ".[docs]"')
html_static_path = [str(Path(_mathjax.origin).parent / "static")]  # -> _build/html/_static/mathjax/
mathjax_path = "mathjax/tex-chtml.js"

# --- HTML
html_theme = "furo"
html_title = "snn"
html_show_sourcelink = False
html_theme_options = {"navigation_with_keys": True}

# --- API reference: one page per module, generated from the packages at build time.
autosummary_generate = True
autosummary_imported_members = False
autodoc_default_options = {"members": True, "show-inheritance": True, "member-order": "bysource"}
autodoc_typehints = "description"
autodoc_preserve_defaults = True  # signatures show defaults as written (p=LIFAdExParameters())
autodoc_typehints_description_target = "documented_params"
autodoc_inherit_docstrings = False  # Lightning's own docstrings use roles that resolve only in its docs
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_ivar = True  # "Attributes:" of a NamedTuple as fields: autodoc documents the members
add_module_names = False
python_use_unqualified_type_names = True
# Every cross-reference must resolve (nitpicky); what it cannot resolve offline, because it
# belongs to another project and intersphinx would have to fetch that project's inventory, is
# rendered as plain code: see snn_api.py.
nitpicky = True

# --- MyST and notebooks
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3
nb_execution_mode = "cache"
nb_execution_cache_path = str(DOCS / "_build" / ".jupyter_cache")
nb_execution_timeout = 900
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_merge_streams = True
nb_kernel_rgx_aliases = {".*": "python3"}

# Filled in by snn_api (package -> [(exported name, its definition)]); the module template reads it.
from snn_api import module_constants, package_exports, shadowed_modules  # noqa: E402

autosummary_context = {"package_exports": package_exports(), "module_constants": module_constants(),
                       "shadowed_modules": shadowed_modules()}
