"""Everything that talks to the Docker engine: the client, containers, volumes, job runs, the
operator's pre-flight and the login commands.

May import: ``moonmind_codex.core``, ``moonmind_codex.gate``, ``moonmind_codex.settings``,
``moonmind_codex.store``, this folder and the Docker SDK. Named ``engine`` rather than
``docker`` so that it never shadows the Docker SDK's package.
"""
