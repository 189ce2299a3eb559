"""Accessibility domain: WCAG 2.2 contrast checks, keyboard shortcut conflict checks and
per-user accessibility preferences (``models``, ``store``, ``service``, ``api``; the pure
checks in ``contrast`` and ``shortcuts``). Imports no other domain."""
