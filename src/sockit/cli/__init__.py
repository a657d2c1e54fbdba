"""L5: the ``sockit`` command line. Parsing and wiring only; no socket logic of its own."""
