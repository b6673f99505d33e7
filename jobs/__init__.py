"""Entry points of the `tadm` command: one module per subcommand, each with main(argv)."""
