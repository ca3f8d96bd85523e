"""The Typer command-line interface (thin: parses options and calls the stages)."""
