"""The operators' ``moonmind-codex`` command (``app``) and the Prometheus exposition
(``metrics``): a thin layer over the library; it may import every layer.
"""
