"""The shipped YAML configs, installed as package data of ``tte_scale.configs``.

``demo.yaml``, ``pretrain/``, ``shard/`` and ``tasks/`` describe whole runs. A command given
``--config configs/pretrain/demo.yaml`` reads that file from the current folder when it exists
there and otherwise this installed copy (:func:`tte_scale.config.resolve_config_path`).
"""
