"""Thin kopf handlers: route watch events and timers to the controllers.

Importing ``dchat_operator.handlers`` registers them (``kopf run -m dchat_operator.handlers``
works as well as the ``dchat-operator`` console script).
"""

from dchat_operator.handlers import backup as backup
from dchat_operator.handlers import cluster as cluster
from dchat_operator.handlers import runtime as runtime

__all__ = ["backup", "cluster", "runtime"]
