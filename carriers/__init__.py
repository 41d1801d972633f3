"""carriers package."""
