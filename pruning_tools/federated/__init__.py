"""Federated pruning across a fleet with Flower: each vehicle a Flower client holding only its own data,
federated stage 1 (gradient-L1 sums -> budgets) and stage 3 (FedAvg / FedProx fine-tuning of one pruned structure).

Entry points (stable API):

* :func:`pruning_tools.federated.run.run_federated` ``(config, out, ray_address=None, progress=True) -> dict``
  — a whole job from a config dict / :class:`~pruning_tools.federated.config.FederatedConfig`; writes and
  returns ``out/results.json`` (``rounds``, ``clients``, ``federated``, ``central``, ``dense``, ``stage1``, ``target``).
* :func:`pruning_tools.federated.run.run_simulation_job` ``(cfg, run_dir, ray_address, progress) -> dict`` — the
  federated half only (Flower simulation engine); returns the server's summary (``stage1``, ``rounds``, ``model``).
* :func:`pruning_tools.federated.run.run_central` ``(cfg, run_dir, progress) -> dict`` — the central baseline on the
  union of the vehicles' data at equal steps (``model`` path, ``ratios``, ``steps``).
* :func:`pruning_tools.federated.run.evaluate_models` ``(cfg, run_dir, {name: model}) -> dict`` — models on the
  server's held-out test frames and on each vehicle's test split.
* :func:`pruning_tools.federated.config.load_config` / ``FederatedConfig.from_dict`` — the config.
* :func:`pruning_tools.federated.job.write_job` / ``read_job`` — ``RUN/job.json`` (also re-exported by ``run``).
* :mod:`pruning_tools.federated.apps` — ``build_client_app(job)``, ``build_server_app(job)``, and module-level
  ``client_app`` / ``server_app`` for the deployment engine (``flwr run`` with ``--run-config 'job="RUN/job.json"'``).
* :mod:`pruning_tools.federated.core` — the Flower-free halves (stage-1 sums and their aggregation, masks,
  local fine-tuning with FedProx, evaluation).
"""
