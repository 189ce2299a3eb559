"""Generator of ``manifests/monitoring/``: rule files, scrape example, Grafana dashboards.

Design: the rules come from the operator's builder (``dchat_operator.builders.monitoring``,
the one source of the rules the operator puts in each cluster's PrometheusRule); the
dashboards are Python (``dashboards``, grafana-foundation-sdk from the ``monitoring`` extra,
which neither image installs). ``python -m devtools.monitoring`` writes every file;
``--check`` exits 1 when a committed file differs (the unit test does the same).
"""
