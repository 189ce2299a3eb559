"""Real services for the test suite, started by the tests themselves.

Each module starts one real component on loopback and stops it again: PostgreSQL from the
Debian package (``postgres``), an S3-compatible server (``s3``: moto's server mode, or any
endpoint named by ``DCHAT_TEST_S3_ENDPOINT``), and the Kubernetes control plane built from
Go modules (``cluster``: wraps tests/cluster/up.sh). Nothing here is a mock.
"""
