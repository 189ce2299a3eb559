"""Chat domain: users, channels and messages (``models``, ``store``, ``service``, ``api``).
The hot read path (channel and message pages) is built as JSON by the database: see
``storage.base``. Imports no other domain."""
