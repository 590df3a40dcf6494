"""noisewarp: the application on top of the core2d and noise3d libraries.

The `noisewarp` command (cli), video and flow sources, file formats (io), the streaming runner,
statistics, method comparison, the demo, Ray batches and the `volume` subcommand. The
libraries below never import this package.
"""
__version__ = "0.1.0"
