"""Studies that train AND evaluate, above both :mod:`spatial_mllm.train` and :mod:`spatial_mllm.eval` (which
never import each other's direction: ``eval/`` never imports ``train/``):

* :mod:`~spatial_mllm.experiments.ablations` + :mod:`~spatial_mllm.experiments.ablation_plots` — the ablation
  grid of notebook 05 (connector × sampling × frames over seeds);
* :mod:`~spatial_mllm.experiments.mini_study` + :mod:`~spatial_mllm.experiments.mini_study_plots` — the mini
  study of notebook 07 (``make mini``).
"""
