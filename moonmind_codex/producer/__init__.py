"""A producer's side: routing runs to shards, submitting and recording them, the task hooks and
message signing.

May import: ``moonmind_codex.core``, ``moonmind_codex.settings``, ``moonmind_codex.store``, this
folder, Celery/kombu and cryptography; never the Docker SDK (a producer needs no engine).
"""
