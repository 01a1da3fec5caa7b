"""akosha_url pointed at another Akosha (moved to another host, a new instance): the
memories delivered to the old one are sent to the new one; a change of credentials alone
sends nothing again."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.akosha_fixtures import AkoshaServer
from tests.integration.test_pipeline_local import Setup
from tests.storegen import make_store

pytest_plugins = ["tests.akosha_fixtures"]


def _point_at(s: Setup, url: str) -> None:
    settings = yaml.safe_load(s.config.read_text())
    settings["akosha_url"] = url
    s.config.write_text(yaml.safe_dump(settings))


def test_memories_go_to_the_akosha_akosha_url_points_at_now(
    tmp_path: Path, akosha_server: AkoshaServer, akosha_server_json: AkoshaServer
) -> None:
    old, new = akosha_server, akosha_server_json
    s = Setup(tmp_path, akosha_url=old.url)
    make_store(s.store)
    assert s.once().returncode == 0
    delivered = old.stored()
    assert delivered

    _point_at(s, new.url)  # the store unchanged, only Akosha moved
    res = s.once()
    assert res.returncode == 0, res.stderr
    assert new.stored() == delivered
    assert "another Akosha" in res.stderr
    assert "Traceback" not in res.stderr

    # the same Akosha with other credentials in the URL: nothing is sent again
    sent = sum(new.sent_counts().values())
    _point_at(s, new.url.replace("://", "://ann:s3cret-pw@"))
    res = s.once()
    assert res.returncode == 0, res.stderr
    assert "another Akosha" not in res.stderr
    assert sum(new.sent_counts().values()) == sent
    assert "s3cret-pw" not in res.stdout + res.stderr
