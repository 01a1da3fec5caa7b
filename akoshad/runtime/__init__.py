"""The running daemon: lifecycle, control socket, notifications and monitoring.

``run`` is ``akoshad run``; ``wiring`` builds the parts once; ``daemon`` (startup, main
loop, shutdown, reload) runs them; ``status`` reads them; ``control`` serves the socket
and ``control_client`` talks to it; ``notify`` speaks sd_notify and
``watchdog`` feeds it; ``logs`` configures
logging; ``health``, ``health_watch`` and ``safety`` judge the state; ``metrics`` and
``webhooks`` publish events; ``drills`` schedules restore drills.
"""
