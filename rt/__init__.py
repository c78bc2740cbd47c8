"""Everything with time, processes and I/O: recordings, LSL, the loop, ZeroMQ, the CLI."""
