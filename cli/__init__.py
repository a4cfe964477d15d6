"""The `qt` command, the top floor: one Typer app (main) and its sub-commands; nothing imports it."""
