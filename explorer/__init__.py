"""explorer: quantized training runs, scaling-law analysis and format recommendations.

Layers (imports point down only):

    explorer.cli -> explorer.report -> explorer.analysis -> fpformat
                    explorer.train  ----------------------> fpformat (+ fpformat.torch)
"""

__version__ = "0.1.0"
