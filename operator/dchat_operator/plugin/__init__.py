"""``kubectl dchat``: the kubectl plugin (console script ``kubectl-dchat``).

Design:
- The plugin never goes around the operator: every command reads or edits the custom
  resources (and their annotations, the scale subresource) exactly as a user with kubectl
  would, and waits for the operator's answer in ``status``. It imports the API models and the
  pure builders (to know which children a cluster has), never the controllers, handlers or
  the operator's client (an import-linter contract keeps it so).
- One module per command group, each thin: gathering (async, ``kube``) is separate from
  rendering (pure functions of recorded objects, unit-tested without a cluster).
- Exit codes scripts can rely on (``cli.EXIT_*``): 0 ok, 1 failure or unhealthy, 2 usage
  error; ``diff`` follows ``kubectl diff`` (0 no change, 1 changes, 2 error).
"""
