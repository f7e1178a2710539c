"""The Bus CLI hook: adds the `containers` group to the host's root group. Nothing else.

The host calls this on every `bus` run, `--help` included, so it imports only click
(which the host has already loaded) and our thin command module.
"""

import pluggy

hookimpl = pluggy.HookimplMarker("bus")


@hookimpl
def register_commands(cli):
    from .cli import containers

    cli.add_command(containers, name="containers")
