"""Development tools of TexTalker for Blender (not shipped in the extension).

Libraries: `tools.training` (resumable training stages), `tools.synthetic_textalk4d` (the dataset
generator and reader), `tools.evaluation` (metrics, baselines, report), `tools.real_speech` (the
real-recording lip-sync check). The other modules are command lines over them and the core
(`.venv/bin/python tools/NAME.py --help`). `tools/setup_env.sh` makes the checkout importable in
`.venv` (a .pth file, as an editable install does), so every script imports `tools.*` and
`textalker_blender` the same way from any folder.
"""
