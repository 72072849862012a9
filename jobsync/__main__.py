"""`python -m jobsync` runs the same CLI as the `jobsync` console script."""

from jobsync.cli import main

main()
