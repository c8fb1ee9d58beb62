"""The pre-flight inside the job image: the probe of a mounted Codex home and the gate's check.

Runs as the job uid in every job container (``moonmind-codex-job`` runs
``python3 -s -S -m moonmind_codex.gate.check`` under the volume's lock, before the command), so
it may import only ``moonmind_codex.core``, this folder and the standard library: the image
copies the package without its dependencies, and each imported module delays the phase.
"""
