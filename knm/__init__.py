"""knm package."""
