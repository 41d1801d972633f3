"""The message contract v1: payloads, results and their JSON Schema files."""
