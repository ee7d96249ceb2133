"""How asset values reach disk under data/ (atomic, partition-aware, registered in the catalogue).

* ``files.DistilleryIOManager`` — the ``io_manager`` resource: Path / list[dict] values -> catalogued files.
* ``register.register_files`` — for assets that write many files and return ``MaterializeResult``.
"""
