"""explorer: quantized training runs, scaling-law analysis and format recommendations.

Layers (every import points down or sideways within a layer, never up; no cycles, also not
through function-local imports)::

    explorer.cli (+ commands/) -> explorer.report -> explorer.{laws, fit, recommend, metrics,
                                                     hwcost, ...} -> fpformat
                                  explorer.train   -----------------> fpformat (+ fpformat.torch)

* ``explorer.cli`` and ``explorer.commands``: the ``fpx`` command line; parse, call a library
  function, print.
* ``explorer.report``: the recommendation report (Markdown, HTML, figures).
* The analyzer, torch-free: ``laws`` (scaling laws and their optima), ``fit`` (fitting them to
  runs), ``recommend``, ``metrics`` (measured format facts), ``hwcost``, ``accumulation``, and
  the shared helpers ``blocks`` (block-size parsing, log2 B), ``results`` (the one reader of the
  results database) and ``progress``.
* ``explorer.train``: models, quantized GEMMs, trainer, PTQ, sweeps and the results store; it
  needs torch and uses only the torch-free helpers above.
"""

__version__ = "0.1.0"
