"""dchat_operator: the kopf operator that runs DchatCluster resources.

Layers (import-linter enforces them; each imports only downward):
``cli`` > ``handlers`` (kopf glue) > ``controllers`` (reconcile logic) > ``clients`` (all
Kubernetes I/O) > ``builders`` (pure objects from the model) > ``api`` (models, CRD, constants).
"""
