"""The pure core: decisions, judgements, states and texts, with no I/O.

May import: ``moonmind_codex.core`` only, and the standard library (no third-party package).
Everything above it (settings, the store, the Docker adapter, producers, the worker, the CLI)
may import it. Its modules are the mutation-tested set: ``scripts/mutation.sh`` mutates every
module of this folder (``[tool.mutmut]`` in pyproject.toml, pinned by tests/unit/test_layers.py).
"""
