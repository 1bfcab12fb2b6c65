from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest
from pydantic.dataclasses import dataclass

from server.config import STRICT, Config, Limits, build_config, settings_from

CONFIG_TOML = """
model = "from-file"
listen = "0.0.0.0:6000"
threshold = 0.3
top_k = 2
data_dir = "/srv/file-data"

[limits]
max_new_tokens = 100
max_page_size = 500
"""


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "editcache.toml"
    path.write_text(CONFIG_TOML)
    return path


def test_defaults_are_valid() -> None:
    config = build_config()
    assert config == Config()
    assert config.limits == Limits()
    assert config.threshold is None and config.gate == "classifier" and config.top_k >= 1  # the artifact sets it
    assert 1 <= config.default_max_new_tokens <= config.limits.max_new_tokens
    assert 1 <= config.default_page_size <= config.limits.max_page_size


def test_file_values_are_read_and_converted(config_file: Path) -> None:
    config = build_config(file=config_file)
    assert config.model == "from-file"
    assert config.listen == "0.0.0.0:6000"
    assert config.threshold == 0.3
    assert config.top_k == 2
    assert config.data_dir == Path("/srv/file-data") and isinstance(config.data_dir, Path)
    assert config.limits.max_new_tokens == 100
    assert config.limits.max_page_size == 500
    assert config.limits.max_text_chars == Limits().max_text_chars  # untouched limits keep their defaults
    assert config.encoder == Config().encoder  # untouched settings keep their defaults


def test_environ_beats_file_and_overrides_beat_environ(config_file: Path) -> None:
    environ = {"EDITCACHE_THRESHOLD": "0.6", "EDITCACHE_TOP_K": "5", "EDITCACHE_MODEL": "from-env",
               "UNRELATED": "ignored", "HOME": "/root"}
    config = build_config(file=config_file, environ=environ, overrides={"model": "from-flag", "listen": None})
    assert config.model == "from-flag"  # override > environ > file
    assert config.threshold == 0.6 and isinstance(config.threshold, float)  # environ > file, converted
    assert config.top_k == 5 and isinstance(config.top_k, int)
    assert config.listen == "0.0.0.0:6000"  # a None override leaves the file's value
    assert config.limits.max_new_tokens == 100


def test_environ_only(tmp_path: Path) -> None:
    config = build_config(environ={"EDITCACHE_DATA_DIR": str(tmp_path), "EDITCACHE_LOG_LEVEL": "DEBUG"})
    assert config.data_dir == tmp_path
    assert config.log_level == "DEBUG"


def test_override_expands_home_in_paths() -> None:
    config = build_config(overrides={"cache_dir": "~/somewhere"})
    assert config.cache_dir == Path.home() / "somewhere"


def test_unknown_top_level_key_is_named(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('model = "m"\nthreshhold = 0.5\nbogus = 1\n')
    with pytest.raises(ValueError, match="threshhold") as info:
        build_config(file=path)
    assert "bogus" in str(info.value)


def test_unknown_environ_key_is_named() -> None:
    with pytest.raises(ValueError, match="no_such_setting"):
        build_config(environ={"EDITCACHE_NO_SUCH_SETTING": "1"})


def test_unknown_limits_key_is_named_with_its_table(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[limits]\nmax_tokens = 5\n")
    with pytest.raises(ValueError, match=r"limits\.max_tokens"):
        build_config(file=path)


def test_limits_from_environ_is_refused_with_a_hint() -> None:
    with pytest.raises(ValueError, match=r"\[limits\]"):
        build_config(environ={"EDITCACHE_LIMITS": "max_new_tokens=5"})


@pytest.mark.parametrize(("overrides", "mentions"), [
    ({"threshold": 2}, "threshold"),
    ({"threshold": -0.1}, "threshold"),
    ({"threshold": "high"}, "threshold"),
    ({"top_k": 0}, "top_k"),
    ({"top_k": "four"}, "top_k"),
    ({"listen": "localhost"}, "listen"),
    ({"listen": "localhost:"}, "listen"),
    ({"listen": ":50051"}, "listen"),
    ({"gate": "oracle"}, "gate"),
    ({"default_max_new_tokens": 0}, "default_max_new_tokens"),
    ({"default_max_new_tokens": Limits().max_new_tokens + 1}, "default_max_new_tokens"),
    ({"default_page_size": 0}, "default_page_size"),
    ({"other_wordings": -1}, "other_wordings"),
    ({"context_prefixes": -1}, "context_prefixes"),
    ({"log_level": "LOUD"}, "log_level"),
    ({"model": 5}, "model"),  # not turned into "5"
    ({"top_k": 2.5}, "top_k"),  # not truncated to 2
    ({"insecure": "maybe"}, "insecure"),
])
def test_bad_values_raise_value_error_naming_the_setting(overrides: dict[str, object], mentions: str) -> None:
    with pytest.raises(ValueError, match=mentions):
        build_config(overrides=overrides)


@dataclass(frozen=True, config=STRICT)
class WithTuple:
    names: tuple[str, ...] = ()


def test_a_tuple_setting_is_converted_from_a_list_and_refused_as_a_string_or_of_the_wrong_items() -> None:
    # The loader this replaced matched annotation strings, so a tuple field would have become the string "a,b".
    loaded = settings_from(WithTuple, {"names": ["a", "b"]})
    assert loaded.names == ("a", "b") and isinstance(loaded.names, tuple)
    for wrong, said in (("a,b", "got 'a,b'"), ([1, 2], "names.0"), (5, "got 5")):
        with pytest.raises(ValueError, match="setting names") as info:
            settings_from(WithTuple, {"names": wrong})
        assert said in str(info.value)


def test_non_numeric_threshold_from_environ_names_setting_and_value() -> None:
    with pytest.raises(ValueError, match="threshold") as info:
        build_config(environ={"EDITCACHE_THRESHOLD": "abc"})
    assert "abc" in str(info.value)


def test_default_max_new_tokens_checked_against_configured_limit(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("default_max_new_tokens = 50\n[limits]\nmax_new_tokens = 20\n")
    with pytest.raises(ValueError, match="default_max_new_tokens"):
        build_config(file=path)


@pytest.mark.parametrize("listen", ["127.0.0.1:50051", "localhost:1", "[::1]:8080", "example.org:65535"])
def test_valid_listen_addresses(listen: str) -> None:
    assert build_config(overrides={"listen": listen}).listen == listen


def test_every_setting_can_come_from_environ() -> None:
    # Each scalar field has an EDITCACHE_ name; the values round-trip through string conversion
    # (an empty string is an unset path).
    defaults = Config()
    values = {f.name: getattr(defaults, f.name) for f in fields(Config) if f.name != "limits"}
    environ = {f"EDITCACHE_{name.upper()}": "" if value is None else str(value) for name, value in values.items()}
    assert build_config(environ=environ) == defaults


@pytest.mark.parametrize("line", ["limits = 5", 'limits = "max_new_tokens=5"', "limits = [1, 2]"])
def test_limits_that_is_not_a_table_is_a_value_error(tmp_path: Path, line: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(line + "\n")
    with pytest.raises(ValueError, match=r"\[limits\]"):
        build_config(file=path)


def test_malformed_toml_is_a_value_error(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("threshold = = 0.5\n")
    with pytest.raises(ValueError):
        build_config(file=path)


def test_flag_limits_merge_with_file_limits_and_auth_settings_convert(config_file: Path) -> None:
    config = build_config(
        file=config_file,
        environ={"EDITCACHE_INSECURE": "true", "EDITCACHE_TOKENS_FILE": "~/tokens.toml"},
        overrides={"limits": {"max_queue": 3}},
    )
    assert config.limits.max_queue == 3 and config.limits.max_new_tokens == 100  # both sources kept
    assert config.insecure is True and config.tokens_file == Path("~/tokens.toml").expanduser()
    assert build_config().tokens_file is None and build_config().insecure is False


def test_tls_cert_without_key_is_a_value_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="tls_cert and tls_key"):
        build_config(overrides={"tls_cert": tmp_path / "cert.pem"})


def test_non_boolean_insecure_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="insecure"):
        build_config(environ={"EDITCACHE_INSECURE": "maybe"})


def test_the_config_files_log_level_is_applied(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import logging

    from server import cli

    (tmp_path / "c.toml").write_text('log_level = "warning"\n')
    seen: list[int] = []

    async def serve(config: object, auth: object, on_bound: object = None, on_http_bound: object = None) -> None:
        seen.append(logging.getLogger().level)

    monkeypatch.setattr("server.app.serve", serve)
    monkeypatch.delenv("EDITCACHE_LOG_LEVEL", raising=False)
    before = logging.getLogger().level
    try:
        assert cli.main(["--config", str(tmp_path / "c.toml")]) == 0
    finally:
        logging.getLogger().setLevel(before)
    assert seen == [logging.WARNING]


def test_the_refusal_for_erase_edits_is_set_from_every_source_and_must_say_something() -> None:
    assert build_config().refusal == "I don't know."
    assert build_config(environ={"EDITCACHE_REFUSAL": "That is not something I can say."}).refusal == (
        "That is not something I can say.")
    with pytest.raises(ValueError, match="refusal must be non-empty"):
        build_config(overrides={"refusal": "  "})
