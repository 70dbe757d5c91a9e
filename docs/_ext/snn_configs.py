"""The configs reference, generated from conf/ at build time, so it cannot go stale.

``.. snn-config-reference::`` renders, for every config group, a table of its options (each
option's description is the comment at the top of its YAML file) and then every file itself. The
only hand-written text is what each group sets (``GROUPS``); ``tests/test_config.py`` checks that
every group of conf/ has an entry there and every option file its comment, so a new group or
option fails the tests until it is described.
"""

import os
import re
from pathlib import Path

CONF = Path(__file__).resolve().parents[2] / "conf"

# What each group sets; the options and their descriptions come from the files.
GROUPS = {
    "model": "The network: ``model.T``, ``model.dt``, ``model.encoder.*``, ``model.conv.*``, "
             "``model.hidden``, ``model.readout.*``, ``model.decoder``. ``adex``/``lif``: conv encoder, Linear, "
             "LIFAdEx (or LIF), Linear, LI readout; ``adex_conv`` puts AdEx neurons after each conv block; "
             "``radex``/``rlif``: recurrent sequence classifiers for ``[B, T, F]`` data (memory tasks, SHD/SSC).",
    "model/neuron": "The neuron of a model (``model.neuron.*``: every parameter, ``method``, ``alpha``, ``learnable``, "
                    "``integrator``, ``backend``); chosen by the model file.",
    "dataset": "Files, batch size, workers, ``pin_memory``, validation split, augmentation; the event sets and the "
               "memory tasks: :doc:`data`.",
    "trainer": "Lightning ``Trainer`` arguments: epochs, devices, precision, gradient clipping; ``slurm``: multi-node "
               "DDP under SLURM (:doc:`sweeps_ddp_slurm`).",
    "logger": "Where metrics go.",
    "callbacks": "Checkpointing on ``val/acc``, learning-rate monitor, model summary, progress bar, and the "
                 "monitoring and safety callbacks (:doc:`training`); remove one with ``callbacks.<name>=null``.",
    "experiment": "Named recipes: overrides of the groups above (results in ``benchmarks/RESULTS.md``).",
    "hparams_search": "An Optuna sweep, run with ``-m`` (:doc:`sweeps_ddp_slurm`).",
    "hydra/launcher": "Submit the runs of ``-m`` to SLURM through Hydra's submitit launcher (:doc:`sweeps_ddp_slurm`).",
    "hydra/sweeper": "The Optuna sweeper of ``hparams_search/`` (Optuna >= 4, pruning, resuming; ``snn/sweep/``), "
                     "run with ``-m`` (:doc:`sweeps_ddp_slurm`).",
    "debug": "Quick checks: one batch of everything on the CPU, or overfit a few batches.",
}


def groups() -> dict[str, list[str]]:
    """``{group: [options]}`` for every folder of conf/ that holds YAML files."""
    found = {}
    for path in sorted(CONF.glob("**/*.yaml")):
        if path.parent != CONF:
            found.setdefault(path.parent.relative_to(CONF).as_posix(), []).append(path.stem)
    return found


def description(path: Path) -> str:
    """The comment at the top of a config file (``# @package`` lines left out), as one paragraph."""
    lines = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        if not line.startswith("# @package"):
            lines.append(line[1:].strip())
    return " ".join(lines)


def reference_rst(conf: str = str(CONF)) -> str:
    """The reference as reStructuredText: the top-level config, then one section per group.
    ``conf`` is how the page that includes it reaches conf/ (a path relative to the page)."""
    out = ["The root config, ``conf/config.yaml``: what every run starts from.", "",
           f".. literalinclude:: {conf}/config.yaml", "   :language: yaml", ""]
    for group, options in groups().items():
        title = f"``{group}/``"
        out += [title, "-" * len(title), "", GROUPS.get(group, ""), "", ".. list-table::", "   :header-rows: 1",
                "   :widths: 1 4", "", "   * - option", "     - what it is"]
        for option in options:
            text = _rst_text(description(CONF / group / f"{option}.yaml"))
            out += [f"   * - :ref:`{option} <config-{group}-{option}>`", f"     - {text}"]
        out.append("")
        for option in options:
            out += [f".. _config-{group}-{option}:", "", f"``{group}={option}``".replace("/=", "="), "^" * 40, "",
                    f".. literalinclude:: {conf}/{group}/{option}.yaml", "   :language: yaml", ""]
    return "\n".join(out)


def _rst_text(comment: str) -> str:
    """A config comment as reST: `code` (as the comments write it) becomes ``code``, and every
    other character that reST would read as markup (``*``, ``_`` ending a word, ``|``) is escaped."""
    parts = re.split(r"(`[^`]+`)", comment)
    out = []
    for part in parts:
        if part.startswith("`") and part.endswith("`") and len(part) > 1:
            out.append(f"``{part[1:-1]}``")
        else:
            out.append(re.sub(r"([*|`\\]|_(?=\W|$))", r"\\\1", part))
    return "".join(out)


def setup(app):
    from docutils import nodes
    from docutils.parsers.rst import Directive
    from docutils.statemachine import StringList

    class ConfigReference(Directive):
        """``.. snn-config-reference::`` (in a reST page, at section level: it makes sections)."""

        def run(self):
            env = self.state.document.settings.env
            for path in CONF.glob("**/*.yaml"):
                env.note_dependency(str(path))  # an edited config rebuilds the page
            page = Path(env.doc2path(env.docname)).parent
            container = nodes.container()
            text = StringList(reference_rst(os.path.relpath(CONF, page)).splitlines(), "conf/")
            self.state.nested_parse(text, self.content_offset, container, match_titles=True)
            return container.children

    app.add_directive("snn-config-reference", ConfigReference)
    return {"parallel_read_safe": True}
