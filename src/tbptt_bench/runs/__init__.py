"""The runs layer: task specs and run configs (``spec``), one run (``harness``), many runs
(``sweep``), the on-disk records (``store``) and the machine they ran on (``envinfo``).
It calls the engine; the report reads what it writes."""
