"""The reference host's plugin loading, isolation, context and `bus plugins`."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from bus_host.discovery import parse_entry_points

from tests.host.conftest import HOOKIMPL_HEADER


def warning_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("bus: warning:")]


def plugins_json(bus, **env) -> dict[str, dict]:
    result = bus.run("plugins", "--json", env=env or None)
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert isinstance(rows, list)
    return {row["name"]: row for row in rows}


# --------------------------------------------------------------------------- loading


def test_plugin_commands_appear_in_help(bus):
    bus.site.add_good()
    result = bus.run("--help")
    assert result.returncode == 0
    assert "hello" in result.stdout and "Say hello" in result.stdout
    assert "plugins" in result.stdout and "auth" in result.stdout
    assert result.stderr == ""


def test_plugin_command_receives_host_context(bus):
    bus.site.add_good()
    result = bus.run("--api-url", "http://127.0.0.1:9", "hello")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"config_dir={bus.config_dir}",
        "api_url=http://127.0.0.1:9",
        "requests_imported=False",  # startup stays cheap
    ]


def test_context_precedence(bus, tmp_path):
    bus.site.add_good()
    other = tmp_path / "other-config"

    # env only
    out = bus.run("hello", env={"BUS_API_BASE_URL": "http://127.0.0.1:7"}).stdout
    assert f"config_dir={bus.config_dir}" in out and "api_url=http://127.0.0.1:7" in out

    # flags beat env
    out = bus.run(
        "--config-dir",
        str(other),
        "--api-url",
        "http://127.0.0.1:8",
        "hello",
        env={"BUS_API_BASE_URL": "http://127.0.0.1:7"},
    ).stdout
    assert f"config_dir={other}" in out and "api_url=http://127.0.0.1:8" in out

    # config.toml when neither flag nor env; env beats config.toml
    bus.config_dir.mkdir()
    (bus.config_dir / "config.toml").write_text('api_url = "http://127.0.0.1:6"\n')
    assert "api_url=http://127.0.0.1:6" in bus.run("hello").stdout
    out = bus.run("hello", env={"BUS_API_BASE_URL": "http://127.0.0.1:7"}).stdout
    assert "api_url=http://127.0.0.1:7" in out

    # nothing at all: None, and the platformdirs default config dir
    out = bus.run("hello", env={"BUS_CONFIG_DIR": None}).stdout
    xdg = bus.env["XDG_CONFIG_HOME"]
    assert f"config_dir={xdg}/bus" in out and "api_url=None" in out


def test_broken_config_toml_is_a_warning(bus):
    bus.site.add_good()
    bus.config_dir.mkdir()
    (bus.config_dir / "config.toml").write_text("api_url = [unclosed\n")
    result = bus.run("hello")
    assert result.returncode == 0
    assert "api_url=None" in result.stdout
    assert len(warning_lines(result.stderr)) == 1
    assert "config.toml" in result.stderr


def test_plugin_failing_on_import_is_isolated(bus):
    bus.site.add_good()
    bus.site.add_bad_import()
    result = bus.run("hello")
    assert result.returncode == 0
    assert "config_dir=" in result.stdout
    assert warning_lines(result.stderr) == [
        "bus: warning: plugin 'badimport' failed to load: RuntimeError: boom on import"
    ]
    assert result.stderr.count("\n") == 1


def test_plugin_failing_in_register_commands_is_isolated(bus):
    bus.site.add_good()
    bus.site.add_bad_register()
    result = bus.run("--help")
    assert result.returncode == 0
    assert "hello" in result.stdout
    # the command added before the failure is rolled back
    assert "half" not in result.stdout
    assert warning_lines(result.stderr) == [
        "bus: warning: plugin 'badregister' failed to load: ValueError: cannot register second line"
    ]
    assert bus.run("hello").returncode == 0
    assert bus.run("half").returncode == 2


def test_other_plugin_failures_are_isolated(bus):
    """sys.exit() at import, a hookimpl with a wrong signature, a bad entry point value."""
    bus.site.add_good()
    bus.site.add("exiter", "import sys\nsys.exit(3)\n", ep_name="exiter")
    bus.site.add(
        "wrongsig",
        bus.site.header + "\n@hookimpl\ndef register_commands(cli, nonsense):\n    pass\n",
        ep_name="wrongsig",
    )
    bus.site.add("noattr", "", ep_name="noattr", ep_value="noattr:missing")
    result = bus.run("hello")
    assert result.returncode == 0, result.stderr
    warnings = warning_lines(result.stderr)
    assert len(warnings) == 3
    assert "plugin 'exiter' failed to load: SystemExit: 3" in result.stderr
    assert "plugin 'wrongsig' failed to load: PluginValidationError" in result.stderr
    assert "plugin 'noattr' failed to load: AttributeError" in result.stderr


def test_entry_point_naming_an_object(bus):
    code = bus.site.header + textwrap.dedent(
        '''
        class Plugin:
            @hookimpl
            def register_commands(self, cli):
                @cli.command("objcmd")
                def objcmd():
                    """From an object."""
                    click.echo("object plugin ran")


        plugin = Plugin()
        '''
    )
    bus.site.add("objplug", code, ep_name="obj", ep_value="objplug:plugin")
    result = bus.run("objcmd")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "object plugin ran\n"
    row = plugins_json(bus)["obj"]
    assert row["loaded"] is True
    assert row["commands"] == ["objcmd"]
    assert row["entry_point"] == "objplug:plugin"


def test_strict_mode_makes_a_failure_an_error(bus):
    bus.site.add_good()
    bus.site.add_bad_import()
    result = bus.run("hello", env={"BUS_STRICT_PLUGINS": "1"})
    assert result.returncode == 1
    assert result.stdout == ""
    assert (
        "bus: error: plugin 'badimport' failed to load: RuntimeError: boom on import"
        in result.stderr
    )
    assert "BUS_STRICT_PLUGINS" in result.stderr
    assert bus.run("--help", env={"BUS_STRICT_PLUGINS": "1"}).returncode == 1


def test_strict_mode_with_healthy_plugins(bus):
    bus.site.add_good()
    result = bus.run("hello", env={"BUS_STRICT_PLUGINS": "1"})
    assert result.returncode == 0
    assert result.stderr == ""


def test_unexpected_exception_in_a_command(bus):
    bus.site.add_good()
    result = bus.run("crash")
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "bus: error: unexpected error: RuntimeError: unexpected failure in plugin command "
        "(set BUS_DEBUG=1 for the traceback)"
    ]
    debug = bus.run("crash", env={"BUS_DEBUG": "1"})
    assert debug.returncode == 1
    assert "Traceback" in debug.stderr


def test_disable_plugins_skips_discovery_and_loading(bus, tmp_path):
    bus.site.add_good()
    bus.site.add_bad_import()
    marker = tmp_path / "imported"
    env = {"BUS_DISABLE_PLUGINS": "1", "GOODPLUG_IMPORT_MARKER": str(marker)}
    result = bus.run("--help", env=env)
    assert result.returncode == 0
    assert "hello" not in result.stdout
    assert result.stderr == ""
    assert bus.run("hello", env=env).returncode == 2
    assert not marker.exists()

    rows = plugins_json(bus, **env)
    assert not marker.exists()  # listing reads the manifest without importing the plugin
    for name in ("good", "badimport"):
        assert rows[name]["loaded"] is False
        assert "BUS_DISABLE_PLUGINS" in rows[name]["error"]
    assert rows["good"]["commands"] == ["hello", "crash"]  # from the manifest

    # without the switch the plugin is imported
    assert bus.run("hello", env={"GOODPLUG_IMPORT_MARKER": str(marker)}).returncode == 0
    assert marker.exists()


def test_disable_plugins_by_name(bus):
    bus.site.add_good()
    bus.site.add_bad_import()
    names = ",".join(filter(None, [bus.env.get("BUS_DISABLE_PLUGINS"), "badimport"]))
    result = bus.run("hello", env={"BUS_DISABLE_PLUGINS": names})
    assert result.returncode == 0
    assert result.stderr == ""
    result = bus.run("plugins", env={"BUS_DISABLE_PLUGINS": names})
    assert any(
        line.split()[:3] == ["badimport", "0.3", "disabled"] for line in result.stdout.splitlines()
    )


# --------------------------------------------------------------------------- bus plugins


def test_plugins_table(bus):
    bus.site.add_good()
    bus.site.add_bad_import()
    bus.site.add_bad_register()
    result = bus.run("plugins")
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["NAME", "VERSION", "STATUS", "HOOKS", "COMMANDS"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert rows["good"].split() == ["good", "1.0", "loaded", "register_commands", "hello,", "crash"]
    assert "failed: RuntimeError: boom on import" in rows["badimport"]
    assert rows["badimport"].split()[:2] == ["badimport", "0.3"]
    assert "failed: ValueError: cannot register second line" in rows["badregister"]
    # columns are aligned
    status_col = lines[0].index("STATUS")
    assert rows["good"][status_col:].startswith("loaded")
    assert rows["badimport"][status_col:].startswith("failed: ")


def test_plugins_json(bus):
    bus.site.add_good()
    bus.site.add_bad_import()
    bus.site.add_bad_register()
    # a plugin without a manifest: hooks and commands come from what it registered
    bus.site.add(
        "plainplug",
        bus.site.header
        + textwrap.dedent(
            '''
            @hookimpl
            def register_commands(cli):
                @cli.group("plain")
                def plain():
                    """A plugin without a manifest."""
            '''
        ),
        ep_name="plain",
        dist="plain-plugin",
        version="4.5.6",
    )
    rows = plugins_json(bus)
    expected_keys = {
        "name",
        "distribution",
        "version",
        "summary",
        "entry_point",
        "hooks",
        "commands",
        "loaded",
        "error",
    }
    for name in ("good", "badimport", "badregister", "plain"):
        assert set(rows[name]) == expected_keys

    assert rows["good"] == {
        "name": "good",
        "distribution": "goodplug",
        "version": "1.0",
        "summary": "A fake plugin for the host tests.",
        "entry_point": "goodplug",
        "hooks": ["register_commands"],
        "commands": ["hello", "crash"],
        "loaded": True,
        "error": None,
    }
    assert rows["plain"]["distribution"] == "plain-plugin"
    assert rows["plain"]["version"] == "4.5.6"
    assert rows["plain"]["hooks"] == ["register_commands"]
    assert rows["plain"]["commands"] == ["plain"]
    assert rows["plain"]["summary"] is None
    assert rows["plain"]["loaded"] is True

    assert rows["badimport"]["loaded"] is False
    assert rows["badimport"]["error"] == "RuntimeError: boom on import"
    assert rows["badimport"]["version"] == "0.3"
    assert rows["badimport"]["distribution"] == "badimport-plugin"
    assert rows["badregister"]["loaded"] is False
    assert rows["badregister"]["error"] == "ValueError: cannot register second line"
    assert rows["badregister"]["commands"] == []


def test_plugins_with_a_broken_manifest(bus):
    bus.site.add_good(manifest="hooks = [unclosed\n")
    result = bus.run("plugins", "--json")
    assert result.returncode == 0
    row = {r["name"]: r for r in json.loads(result.stdout)}["good"]
    assert row["commands"] == ["hello", "crash"]  # from the registration instead
    assert "plugin 'good': cannot read plugin-manifest.toml" in result.stderr


def test_version_and_module_entry(bus):
    result = bus.run("--version")
    assert result.returncode == 0
    assert result.stdout.startswith("bus ")
    via_module = subprocess.run(
        [sys.executable, "-m", "bus_host", "--version"],
        env=bus.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert via_module.returncode == 0
    assert via_module.stdout == result.stdout


def test_parse_entry_points():
    text = textwrap.dedent(
        """
        # comment
        [console_scripts]
        bus = bus_host.cli:main

        [bus.plugins]
        containers = bus_containers.plugin
        ; another comment
        other=pkg.mod:obj [extra]
        """
    )
    assert parse_entry_points(text) == [
        ("containers", "bus_containers.plugin"),
        ("other", "pkg.mod:obj [extra]"),
    ]


THIEF = HOOKIMPL_HEADER + textwrap.dedent(
    '''
    @click.command("hello")
    def hello():
        """An impostor."""
        click.echo("stolen")


    @click.command("plugins")
    def plugins():
        """Not the host's."""


    @hookimpl
    def register_commands(cli):
        cli.add_command(hello)
        cli.add_command(plugins)
    '''
)


def test_a_later_plugin_cannot_take_over_a_command(bus):
    bus.site.add_good()
    bus.site.add("thief", THIEF, ep_name="thief", dist="thief-plugin")
    result = bus.run("hello")
    assert result.returncode == 0 and result.stdout.startswith("config_dir=")
    assert "plugin 'thief' tried to replace the command 'hello'" in result.stderr
    assert "'plugins'" in result.stderr
    listed = bus.run("plugins")
    assert listed.returncode == 0 and "NAME" in listed.stdout


def test_a_plain_module_plugin_lists_without_a_manifest_warning(bus):
    module = bus.site.root / "modplug.py"
    module.write_text(HOOKIMPL_HEADER + textwrap.dedent(
        '''
        @hookimpl
        def register_commands(cli):
            pass
        '''))
    info = bus.site.root / "modplug-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: modplug\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[bus.plugins]\nmodplug = modplug\n")
    result = bus.run("plugins")
    assert result.returncode == 0 and "modplug" in result.stdout
    assert "warning" not in result.stderr
