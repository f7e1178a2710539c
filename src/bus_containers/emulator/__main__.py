"""`bus-containers-emulator serve|token`: the local stand-in for the container-runner API."""

from __future__ import annotations

import argparse
import atexit
import json
import signal
import sys
import threading
from pathlib import Path

from .. import __version__

DEFAULT_PORT = 8080


def default_state_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_data_dir("bus-containers-emulator"))


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"not a port number (0-65535): {text!r}")
    return port


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bus-containers-emulator",
        description="Local emulator of the AI Platform container-runner API.")
    parser.add_argument("--version", action="version",
                        version=f"bus-containers-emulator {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve the API")
    serve.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    serve.add_argument("--port", type=_port, default=DEFAULT_PORT, help="0 picks a free port")
    serve.add_argument("--state-dir", type=Path,
                       help="secrets (jwt-secret, admin-key), default account, config, and "
                            "the runs (state.db); without it, runs are kept in memory")
    serve.add_argument("--config", type=Path, help="TOML file (default <state-dir>/emulator.toml)")
    serve.add_argument("--faults", type=Path, help='JSON file {"faults": [...]} loaded at start')
    token = sub.add_parser(
        "token", help="print a token signed by this emulator's secret",
        description="Print a token signed with the secret in the state dir of an emulator "
                    "that has been started (serve) at least once.")
    token.add_argument("--sub", default=None,
                       help="the account id (JWT sub); default: the state dir's default "
                            "account, the one /auth/token issues for")
    token.add_argument("--scope", default=None, help="space-separated scopes (default: all)")
    token.add_argument("--ttl", type=int, default=None,
                       help="lifetime in seconds (default 3600; at most the configured "
                            "max_token_ttl_seconds, 86400 unless set)")
    token.add_argument("--state-dir", type=Path,
                       help="the state dir the emulator was started with (serve "
                            "--state-dir); default: the emulator's default state dir")
    token.add_argument("--config", type=Path, help="TOML file (default <state-dir>/emulator.toml)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    state_dir = args.state_dir or default_state_dir()
    try:
        if args.command == "token":
            return _token(args, state_dir)
        return _serve(args, state_dir)
    except KeyboardInterrupt:
        return 130
    except ImportError as exc:
        missing = (exc.name or "").split(".")[0]
        if missing not in ("werkzeug", "jwt", "tomli"):
            raise
        # Installed without the extra: say how to get it, not a traceback.
        return _fail(f"the emulator needs {missing}, which comes with the extra: "
                     "pip install 'bus-containers[emulator]'", code=1)


def _fail(message: str, code: int = 2) -> int:
    print(f"bus-containers-emulator: {message}", file=sys.stderr)
    return code


def _token(args: argparse.Namespace, state_dir: Path) -> int:
    from .config import ConfigError
    from .statedir import StateError
    from .tokens import ALL_SCOPES, TokenAuthority, default_account, unknown_scopes

    if args.sub is not None and not args.sub.strip():
        return _fail("--sub must not be empty")
    unknown = unknown_scopes(args.scope) if args.scope is not None else []
    if unknown:
        return _fail(f"--scope: unknown scope(s) {' '.join(unknown)}; the scopes are: "
                     f"{ALL_SCOPES}")
    try:
        config = _load_config(args.config, state_dir)
        max_ttl = config.limits.max_token_ttl_seconds
        ttl = args.ttl if args.ttl is not None else min(3600, max_ttl)
        if not 1 <= ttl <= max_ttl:
            return _fail(f"--ttl must be from 1 to {max_ttl} (max_token_ttl_seconds)")
        # Never a new state dir or secret here: a token signed with it would be refused
        # by the emulator that runs with another one (e.g. one started with --state-dir).
        if not state_dir.is_dir():
            return _fail(f"no emulator state dir at {state_dir}: start the emulator once "
                         "(serve), or pass the --state-dir it was started with")
        authority = TokenAuthority(state_dir, max_ttl, generate=False)
        sub = args.sub if args.sub is not None else default_account(state_dir)
    except (ConfigError, StateError) as e:
        return _fail(str(e))
    scope = " ".join((args.scope if args.scope is not None else ALL_SCOPES).split())
    print(authority.issue(sub, scope, ttl))
    return 0


def _load_config(path: Path | None, state_dir: Path):
    from .config import load_config

    if path is None and (state_dir / "emulator.toml").is_file():
        path = state_dir / "emulator.toml"
    return load_config(path)


def _serve(args: argparse.Namespace, state_dir: Path) -> int:
    from .app import EmulatorApp
    from .config import ConfigError
    from .database import DatabaseError
    from .errors import ApiError
    from .server import build_server, url_of
    from .statedir import StateError

    try:
        config = _load_config(args.config, state_dir)
        # Runs are durable only in a state dir the user named; the default one keeps the
        # token secret, and runs in memory as before.
        database = state_dir / "state.db" if args.state_dir is not None else None
        app = EmulatorApp(state_dir, config, database=database)
    except (ConfigError, StateError, DatabaseError) as e:
        return _fail(str(e))
    except OSError as e:
        return _fail(f"cannot use state dir {state_dir}: {e.strerror or e}")
    if args.faults is not None:
        try:
            app.faults.add(json.loads(args.faults.read_text()).get("faults"))
        except (OSError, ValueError, AttributeError) as e:
            return _fail(f"cannot read faults file {args.faults}: {e}")
        except ApiError as e:
            return _fail(f"faults file {args.faults}: {e.message}")
    atexit.register(app.shutdown)  # also on an unexpected exit: no child outlives us
    try:
        server = build_server(app, args.host, args.port)
    except OSError as e:
        return _fail(f"cannot listen on {args.host}:{args.port}: {e.strerror or e}", 1)
    except (ValueError, OverflowError, UnicodeError) as e:  # e.g. an unusable host name
        return _fail(f"cannot listen on {args.host}:{args.port}: {e}")

    def stop(signum, frame) -> None:
        # serve_forever runs in this (main) thread: shutdown() must come from another one.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"listening on {url_of(server)}", flush=True)
    try:
        server.serve_forever(poll_interval=0.1)  # a prompt exit on SIGTERM
    finally:
        server.server_close()
        app.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
