"""``akoshad takeover`` with a ``local_target_dir`` that does not exist (a typo, a disk not
mounted): it made the directory and an owner record there and said 'this machine owns
this system_id now', exit 0; ``--json`` printed nothing when it could not run."""

from __future__ import annotations

import json
from pathlib import Path

from tests.helpers import akoshad, base_env, write_config


def test_takeover_of_a_missing_outbox_is_refused_and_json_says_why(tmp_path: Path) -> None:
    outbox = tmp_path / "outbx"
    config = write_config(
        tmp_path / "c.yaml",
        data_dir=str(tmp_path / "store"),
        state_dir=str(tmp_path / "state"),
        local_target_dir=str(outbox),
        socket_path=str(tmp_path / "s.sock"),
    )
    env = base_env(tmp_path)
    line = f"local_target_dir {outbox} does not exist: no upload can be there: nothing to take over"
    plain = akoshad("takeover", "--config", str(config), env=env)
    assert (plain.returncode, plain.stderr.strip()) == (1, f"akoshad: {line}")
    as_json = akoshad("takeover", "--json", "--config", str(config), env=env)
    assert as_json.returncode == 1
    assert json.loads(as_json.stdout) == {"ok": False, "problems": [line]}
    assert not outbox.exists()
    outbox.mkdir()  # an outbox there (made by hand, or by the first upload): taken
    taken = akoshad("takeover", "--json", "--config", str(config), env=env)
    assert taken.returncode == 0, taken.stderr
    assert json.loads(taken.stdout)["host"]
