"""`python -m bus_host` is the same as the `bus` console script."""

from bus_host.cli import main

if __name__ == "__main__":
    main()
