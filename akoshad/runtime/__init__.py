"""The running daemon: lifecycle, control socket, notifications and monitoring.

``daemon`` (lock, startup, main loop, shutdown, reload) builds the pipeline and runs it;
``control`` serves the status socket; ``notify`` speaks sd_notify; ``logs`` configures
logging; ``health``, ``health_watch`` and ``safety`` judge the state; ``metrics`` and
``webhooks`` publish events; ``drills`` schedules restore drills.
"""
