"""knm's command line (Typer), one module per command group."""
