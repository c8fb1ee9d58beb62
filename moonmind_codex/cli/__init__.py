"""The operators' ``moonmind-codex`` command: a thin layer over the library; it may import every
layer.

``app`` builds the one parser and maps each command to its handler; the commands live in their
groups (``fleet``, ``logins``, ``runs``: each ``add_commands(subparsers)`` and ``COMMANDS``),
what the groups share in ``common``; ``metrics`` writes the Prometheus exposition.
"""
