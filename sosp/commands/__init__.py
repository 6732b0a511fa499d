"""The `sosp` subcommands, one module per command (or closely related pair); `registry`
lists them in the order `sosp --help` shows them."""
