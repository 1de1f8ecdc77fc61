"""Settings: defaults, TOML, CHRONOLOG_* variables, overrides, and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from chronolog import SchedulerModule, Settings, ValidationError, load_settings


class TestLoading:
    def test_defaults_need_nothing(self) -> None:
        """With no file and no environment, the defaults apply."""
        settings = load_settings(environ={})
        assert settings == Settings()
        assert settings.http_host == "127.0.0.1"
        assert settings.job_shards is None  # the engine's choice

    def test_toml_top_level_or_chronolog_table(self, tmp_path: Path) -> None:
        """Keys may sit at the top level or under [chronolog]."""
        flat = tmp_path / "flat.toml"
        flat.write_text('executor_threads = 3\ncleanup_allowed_roots = ["/srv/logs"]\n')
        nested = tmp_path / "nested.toml"
        nested.write_text(
            '[chronolog]\nexecutor_threads = 3\n[chronolog.functions]\nbackup = "app.jobs:backup"\n'
        )
        assert load_settings(flat, environ={}).cleanup_allowed_roots == ("/srv/logs",)
        loaded = load_settings(nested, environ={})
        assert loaded.executor_threads == 3
        assert loaded.functions == {"backup": "app.jobs:backup"}

    def test_precedence_file_environment_overrides(self, tmp_path: Path) -> None:
        """The environment beats the file and overrides beat both."""
        config = tmp_path / "c.toml"
        config.write_text("executor_threads = 2\nmax_live_actors = 50\n")
        environ = {"CHRONOLOG_EXECUTOR_THREADS": "4", "CHRONOLOG_DEFAULT_TIMEZONE": "Europe/Berlin"}
        settings = load_settings(config, environ=environ, overrides={"max_live_actors": 7})
        assert (settings.executor_threads, settings.max_live_actors) == (4, 7)
        assert settings.default_timezone == "Europe/Berlin"

    def test_environment_values_are_parsed(self) -> None:
        """Numbers, booleans, lists and none are understood; other CHRONOLOG_* names are ignored."""
        settings = load_settings(
            environ={
                "CHRONOLOG_CLEANUP_ALLOW_MOUNT_ROOTS": "true",
                "CHRONOLOG_CLEANUP_ALLOWED_ROOTS": "/a, /b",
                "CHRONOLOG_DEFAULT_TIMEOUT": "2.5",
                "CHRONOLOG_DEFAULT_MISFIRE_GRACE": "none",
                "CHRONOLOG_JOB_SHARDS": "3",
                "CHRONOLOG_CONFIG": "/not/a/setting.toml",
            }
        )
        assert settings.job_shards == 3
        assert settings.cleanup_allow_mount_roots is True
        assert settings.cleanup_allowed_roots == ("/a", "/b")
        assert settings.default_timeout == 2.5
        assert settings.default_misfire_grace is None


class TestErrors:
    def test_bad_value_names_key_and_origin(self, tmp_path: Path) -> None:
        """The message says which key, from where, and what is wrong."""
        with pytest.raises(ValidationError) as raised:
            load_settings(environ={"CHRONOLOG_HTTP_PORT": "70000"})
        assert "http_port" in raised.value.message and "environment" in raised.value.message
        assert raised.value.details["key"] == "http_port"

    @pytest.mark.parametrize("lead", ["-0.01", "1.5"])
    def test_fire_lead_is_bounded(self, lead: str) -> None:
        """A fire may be committed at most a second ahead, and never after its instant."""
        with pytest.raises(ValidationError) as raised:
            load_settings(environ={"CHRONOLOG_FIRE_LEAD_SECONDS": lead})
        assert raised.value.details["key"] == "fire_lead_seconds"

    def test_unknown_key_in_file(self, tmp_path: Path) -> None:
        """A misspelt key is an error, not silently ignored."""
        config = tmp_path / "c.toml"
        config.write_text("executor_thread = 2\n")
        with pytest.raises(ValidationError, match="executor_thread"):
            load_settings(config, environ={})

    def test_missing_and_malformed_files(self, tmp_path: Path) -> None:
        """A missing file and a broken TOML file both say so."""
        with pytest.raises(ValidationError, match="does not exist"):
            load_settings(tmp_path / "nope.toml", environ={})
        broken = tmp_path / "broken.toml"
        broken.write_text("executor_threads = = 2")
        with pytest.raises(ValidationError, match="not valid TOML"):
            load_settings(broken, environ={})

    def test_replace_validates(self) -> None:
        """``Settings.replace`` checks its values too."""
        assert Settings().replace(executor_threads=2).executor_threads == 2
        with pytest.raises(ValidationError):
            Settings().replace(executor_threads=0)

    @pytest.mark.parametrize(
        ("key", "value"),
        [
            ("executor_threads", 0),
            ("job_shards", 0),
            ("default_timeout", float("inf")),
            ("default_retry_backoff", 1e300),
            ("default_misfire_grace", float("nan")),
            ("default_max_retries", 10**6),
            ("disk_reserve_bytes", -1),
            ("disk_reserve_bytes", 1 << 31),
            ("stop_grace_seconds", -1),
            ("stop_grace_seconds", float("inf")),
            # Values of the right type that could not work: found at start, not at the
            # first task or cleanup that would use them.
            ("default_timezone", "Mars/Olympus_Mons"),
            ("cleanup_allowed_roots", ("relative/logs",)),
            ("data_dir", ""),
            # DuckDB reads a "?" in a database path as the start of options.
            ("data_dir", "/srv/what?/data"),
            # Undecodable bytes in a file name, as os.fsdecode carries them.
            ("data_dir", "/srv/bad\udcffname"),
            ("http_token", ""),
            ("projections_memory_limit", "lots"),
            ("projections_memory_limit", "0MB"),
            ("projections_memory_limit", "512"),
            ("projections_memory_limit", "1GB; SET threads=1"),
        ],
    )
    def test_the_module_checks_the_settings_it_is_given(self, key: str, value: object) -> None:
        """A Struct's constructor checks nothing, so ``Settings(executor_threads=0)`` builds;
        the module refuses it, naming the field. The policy defaults have the bounds a
        task's own policies have (a default timeout of ``inf`` would reach every task)."""
        with pytest.raises(ValidationError, match=f"invalid setting {key}") as refused:
            SchedulerModule(Settings(**{key: value}))
        assert refused.value.details["key"] == key

    def test_policy_defaults_from_the_environment_are_bounded(self) -> None:
        """TOML reads ``inf`` as a float: a variable holding it is refused too."""
        with pytest.raises(ValidationError, match="default_timeout") as refused:
            load_settings(environ={"CHRONOLOG_DEFAULT_TIMEOUT": "inf"})
        assert refused.value.details == {"key": "default_timeout", "origin": "environment"}

    def test_an_unknown_default_zone_names_its_origin(self, tmp_path: Path) -> None:
        config = tmp_path / "chronolog.toml"
        config.write_text('default_timezone = "Europe/Berln"\n')
        with pytest.raises(ValidationError, match="not an IANA time zone") as refused:
            load_settings(config, environ={})
        assert refused.value.details == {
            "key": "default_timezone",
            "origin": f"settings file {config}",
        }


def test_duckdb_keeps_to_the_memory_limit_it_is_given(tmp_path: Path) -> None:
    """``projections_memory_limit`` (here from the environment) becomes DuckDB's limit."""
    settings = load_settings(
        overrides={"data_dir": str(tmp_path / "data")},
        environ={"CHRONOLOG_PROJECTIONS_MEMORY_LIMIT": "300MB"},
    )
    module = SchedulerModule(settings)
    module.start_blocking()
    try:
        reader = module.require_projector().reader()
        [limit] = reader.execute("SELECT current_setting('memory_limit')").fetchone() or [None]
        assert limit == "286.1 MiB"  # DuckDB shows 300 MB in binary units
    finally:
        module.stop_blocking()
