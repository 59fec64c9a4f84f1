"""Evaluation of TexTalker against baselines on the synthetic TexTalk4D (tools/evaluate.py).

- `metrics`: LVE, MVE, FDD (motion) and PSNR / SSIM of the reconstructed albedo (texture), with
  torchmetrics where it implements the metric; per-sequence accumulators.
- `report`: writes docs/RESULTS.md from the results dictionary evaluate.py builds.
- `baselines` (another module's owner): the learned baselines (FaceFormer-, CodeTalker-,
  FaceDiffuser-like) behind `load_baseline(name, run_dir)`.

Nothing is imported here eagerly: `baselines` may be absent or may need its trained runs.
"""
