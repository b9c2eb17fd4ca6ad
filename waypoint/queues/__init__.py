"""Queues: the queue model and the dispatcher that claims queued workflows."""
