"""The local emulator of the container-runner API (CONTRACT section 7).

A development tool, not a security boundary. The client never imports this package, and
this package never imports the client's modules.
"""
