"""The shard worker: the Celery app and its tasks, one Codex phase end to end, the start-up
guards and the keep-alive scheduler.

May import every layer below it (core, gate, settings, store, engine, producer).
"""
