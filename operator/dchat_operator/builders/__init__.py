"""Pure builders: a parsed DchatCluster in, plain Kubernetes objects (dicts) out.

No I/O, no clock, no kopf or Kubernetes client here; everything is unit-tested on its output.
"""
