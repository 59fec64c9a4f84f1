"""Resumable training of the TexTalker model (stage 1: VQ autoencoders, stage 2: latent diffusion).

Entry points: `tools/train_vq.py`, `tools/train_ldm.py`, `tools/export_bundle.py`; see
docs/TRAINING.md. The same code runs single-process on a CPU and as several processes under
`torchrun` (gradients averaged across ranks after every backward pass, data order sharded by rank).
"""
