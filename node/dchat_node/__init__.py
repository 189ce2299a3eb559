"""dchat node: the Quart/hypercorn service the operator deploys (console script ``dchat``)."""

__version__ = "0.1.0"
