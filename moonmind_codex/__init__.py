"""moonmind-codex: Celery Codex worker shards with persistent Codex CLI sign-ins."""

__version__ = "0.1.0"
