"""knm's HTTP API: KAZOO's crossbar phone_numbers and tasks routes (``knm api serve``)."""
