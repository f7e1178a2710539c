"""bus-containers: the `containers` plugin of the Bus CLI.

Kept empty of imports on purpose: `bus --help` imports this package on every run.
"""

__version__ = "0.1.0"
