"""Real-component harness shared by the tests and the benchmarks.

- ``harness.hosts``: systemd + Docker host containers (the Molecule host image) and
  ``ansible-playbook`` run with the project's configuration;
- ``harness.broker``: a throw-away RabbitMQ broker (the project's broker image);
- ``harness.logins``: signing an auth volume in with a test API key through the real Codex CLI.

Nothing here is a test: tests and benchmarks import it; it imports neither.
"""
