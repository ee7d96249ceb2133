"""deploy/team/dagster.yaml: a valid instance config on PostgreSQL that keeps the personal instance's limits."""

import yaml
from dagster._core.instance.config import dagster_instance_config

from distillery_assets.paths import repo_root

TEAM = repo_root() / "deploy" / "team"


def _load(path):
    return yaml.safe_load(path.read_text())


def test_team_config_is_valid_and_on_postgres(monkeypatch):
    for key, value in {"DAGSTER_PG_HOST": "127.0.0.1", "DAGSTER_PG_PORT": "5433", "DAGSTER_PG_USERNAME": "u",
                       "DAGSTER_PG_PASSWORD": "p", "DAGSTER_PG_DB": "d"}.items():
        monkeypatch.setenv(key, value)
    config, _ = dagster_instance_config(str(TEAM))  # raises on a config Dagster would refuse
    db = config["storage"]["postgres"]["postgres_db"]
    # the connection comes from the environment only: no literal host, user or password in the file
    for field in ("hostname", "port", "username", "password", "db_name"):
        assert set(_load(TEAM / "dagster.yaml")["storage"]["postgres"]["postgres_db"][field]) == {"env"}, field
    assert db["scheme"] == "postgresql+psycopg2"
    assert config["run_coordinator"]["class"] == "QueuedRunCoordinator"


def test_team_keeps_the_personal_instances_limits_and_monitoring():
    team, personal = _load(TEAM / "dagster.yaml"), _load(repo_root() / "dagster.yaml")
    assert team["concurrency"] == personal["concurrency"]
    assert team["run_monitoring"] == personal["run_monitoring"] and team["run_monitoring"]["enabled"] is True
    # its own local folders, under data/dagster/ (left alone by the catalogue's verify)
    for section in ("local_artifact_storage", "compute_logs"):
        base = team[section]["config"]["base_dir"]
        assert base.startswith("data/dagster/team") and base != personal[section]["config"]["base_dir"]
