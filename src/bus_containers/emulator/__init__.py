"""The local emulator of the container-runner API (CONTRACT section 7).

Runs execute on this machine, each in its own Linux namespaces where the kernel allows it
(sandbox.py, docs/emulator.md "Isolation"). The client never imports this package, and
this package never imports the client's modules.
"""
