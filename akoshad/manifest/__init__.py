"""Where things land in a target, and the manifest that commits an upload.

``layout`` holds the object keys, the manifest's build and validation; ``read`` reads
manifests back from a target (bounded, checked whole); ``facts`` what a
capture established about a file (row counts, JSON validity), recorded in its entry.
"""
