"""Load testing for any registered model through the ChatBackend seam (``duet bench``)."""
