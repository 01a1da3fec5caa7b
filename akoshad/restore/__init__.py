"""Reading uploads back: ``restore``, ``verify`` and restore drills.

``readback`` restores and verifies from the target alone, ``destdir`` writes under
``--dest`` without following a symlink, ``drill`` restores the newest upload and opens it
with its engines (checks run in ``drill_worker``, a short-lived child process),
``drill_dirs`` sweeps what a crashed drill left and reads the stored result, ``throttle``
bounds the rate a drill reads at.
"""
