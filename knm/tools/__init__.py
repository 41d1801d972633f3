"""Developer tools that read the code without running it (``python -m knm.tools.layout``)."""
