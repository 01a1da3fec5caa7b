"""The running daemon: lifecycle, control socket, notifications and monitoring.

``run`` is ``akoshad run``; ``wiring`` builds the parts once; ``daemon`` (startup, main
loop, shutdown, reload) runs them; ``status`` reads them; ``control`` serves the socket
and ``control_client`` talks to it; ``notify`` speaks sd_notify and
``watchdog`` feeds it; ``logs`` configures
logging; ``health``, ``health_watch`` and ``safety`` judge the state; ``metrics`` (with
``metrics_server``; only when ``metrics_listen`` is set, else ``pass_metrics.NoMetrics``)
and ``webhooks`` publish events; ``drills`` schedules restore drills; ``prune``
applies the retention policy (by hand and every ``prune_interval_hours``); ``ownership`` is
``takeover`` and a command's work on the locked state without a daemon.
"""
