"""Celery tasks: thin adapters from a message to a knm operation."""
