"""Running the service: the HTTP protocol with limits, draining servers, the worker supervisor."""
