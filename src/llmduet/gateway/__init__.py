"""The hybrid gateway: privacy guard first (``pii``, ``pseudonymise``)."""
