"""``akoshad config check|show``."""

from __future__ import annotations

import argparse
import json

import yaml

from akoshad.config import Settings
from akoshad.health import warn_data_dir


def cmd_config(args: argparse.Namespace, settings: Settings) -> int:
    """``check`` prints a one-line summary; ``show`` the effective YAML, secrets redacted."""
    if args.action == "check":
        warn_data_dir(settings.data_dir)
        cs = settings.cloud_sync
        target = f"s3://{cs.cloud_bucket}" if cs.cloud_bucket else str(settings.local_target_dir)
        http = settings.akosha_url or "off"
        print(
            f"configuration ok: data_dir={settings.data_dir} target={target} "
            f"akosha_url={http} system_id={cs.system_id}"
        )
        return 0
    data = json.loads(json.dumps(settings.redacted()))
    print(yaml.safe_dump(data, sort_keys=False).rstrip())
    return 0
