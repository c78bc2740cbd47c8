"""One module per ``exoloop`` sub-command: each defines ``register(subparsers)`` and parses only.

The work itself is a library call in ``kernels``/``models``/``rt`` that tests can make directly.
"""
