"""Reconcile logic: desired (builders) vs live (clients), apply, status, events."""
