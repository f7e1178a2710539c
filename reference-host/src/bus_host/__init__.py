"""bus-reference-host: a small stand-in for the Bus CLI host (console script `bus`).

Kept free of imports on purpose: `bus --help` imports this package on every run.
"""

__version__ = "0.1.0"
