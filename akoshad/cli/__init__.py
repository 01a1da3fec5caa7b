"""The command line: one module per command group.

``main`` parses, loads the configuration once, dispatches and maps errors to exit codes;
``client`` asks the running daemon (status, sync, pause, resume, queue); ``config`` is
``config check|show``; ``prune`` is ``prune`` and ``takeover``; ``service`` installs the
systemd / launchd unit; ``mcp`` serves the assistant's tools over stdio.
"""
