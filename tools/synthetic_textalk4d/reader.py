"""Reader of the synthetic TexTalk4D: audio, weights, offsets, motion and wrinkle maps.

    ds = SyntheticTextalk4D("data/synthetic_textalk4d", "train")
    sample = ds[0]                      # a Sample (see below); maps rendered on demand
    for batch in ds.iter_frames(256):   # frame batches for the VQ autoencoders

Weights come back in the template's unit order (`ds.unit_names == template.unit_names`), so
`template.apply_units(sample.weights)` gives the offsets. Offsets are metres from the subject's
neutral (identity) shape; motion maps are those offsets rasterised into the template's UV layout;
wrinkle maps are the channels [fold activation, shade, flush] of core/wrinkle_channels.py, from
the subject's creases and the face units that fold them (`ratio_from_channels` gives the albedo
ratio); `crease_detail(subject, resolution)` is the subject's high-resolution crease height.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np

from textalker_blender.core.wrinkle_channels import CURRENT_ENCODING as WRINKLE_ENCODING

from .speech import Phoneme, read_audio
from .styles import Subject

MOTION_RESOLUTION = 64
WRINKLE_RESOLUTION = 128


@dataclasses.dataclass
class Sample:
    id: str
    subject: str
    subject_index: int          # index in the dataset's subject list (all splits)
    split: str
    text: str
    audio: np.ndarray           # float32 (N,) at sample_rate
    sample_rate: int
    fps: int
    phonemes: list[Phoneme]
    weights: np.ndarray         # float32 (T, 52), template unit order
    offsets: np.ndarray | None = None        # float32 (T, V, 3) metres
    motion_maps: np.ndarray | None = None    # float32 (T, Hm, Wm, 3) metres
    wrinkle_maps: np.ndarray | None = None   # float32 (T, Hw, Ww, 3) [fold, shade, flush]

    @property
    def n_frames(self) -> int:
        return int(self.weights.shape[0])

    def phoneme_at(self, frame: int) -> str:
        """Label of the phoneme sounding at the centre of `frame`."""
        t = (frame + 0.5) / self.fps
        for p in self.phonemes:
            if p.start <= t < p.end:
                return p.label
        return "pau"


def texel_uvs(rasterizer) -> np.ndarray:
    """Mesh UV of every texel centre (H, W, 2), NaN where no part of the layout lies."""
    from textalker_blender.core.uv import texel_centre_uvs

    return texel_centre_uvs(rasterizer.layout, (rasterizer.height, rasterizer.width))


def _uv_scale(rasterizer) -> float:
    """Map widths per UV unit of the finest island, to size the albedo's pre-filter."""
    return float(np.max(rasterizer.layout.scales))


class SyntheticTextalk4D:
    """One split of a built dataset ("train", "test-A", "test-B" or "all")."""

    def __init__(self, root, split: str = "train", template=None, maps: bool = True,
                 motion_resolution: int = MOTION_RESOLUTION, wrinkle_resolution: int = WRINKLE_RESOLUTION,
                 cache_dir=None):
        from textalker_blender.core.template import load_template

        self.root = Path(root)
        self.meta = json.loads((self.root / "meta.json").read_text())
        if split != "all" and split not in self.meta["splits"]:
            raise ValueError(f"unknown split {split!r}; choose from {sorted(self.meta['splits'])} or 'all'")
        self.split = split
        self.template = template or load_template()
        built_for = self.meta.get("template", {})
        if built_for.get("n_vertices") not in (None, self.template.n_vertices):
            raise ValueError(f"{self.root} was built for a template with {built_for['n_vertices']} vertices, "
                             f"this one has {self.template.n_vertices}: rebuild it with tools/make_dataset.py")
        if built_for.get("format_version") not in (None, self.template.metadata.get("format_version")):
            import warnings

            warnings.warn(f"{self.root} was built with template format {built_for['format_version']}; the lip "
                          "closure model may differ from this template's: rebuild with tools/make_dataset.py")
        self.maps = maps
        self.motion_resolution = int(motion_resolution)
        self.wrinkle_resolution = int(wrinkle_resolution)
        self.fps = int(self.meta["fps"])
        self.sample_rate = int(self.meta["sample_rate"])
        self.subject_names = list(self.meta["subjects"])
        self.subjects = {name: Subject.from_dict(json.loads((self.root / "subjects" / f"{name}.json").read_text()))
                         for name in self.subject_names}
        entries = json.loads((self.root / "utterances.json").read_text())
        self.entries = [e for e in entries if split == "all" or e["split"] == split]
        stored = list(self.meta["unit_names"])
        self.unit_names = list(self.template.unit_names)
        self._unit_order = np.array([stored.index(name) for name in self.unit_names])
        self._geometry: dict[str, object] = {}
        self.cache_dir = Path(cache_dir) if cache_dir else None
        fingerprint = hashlib.sha256((self.root / "meta.json").read_bytes()).hexdigest()[:12]
        # maps depend on the dataset and on the template's map layouts
        layouts = self.template.motion_layout.fingerprint + self.template.wrinkle_layout.fingerprint
        layout_tag = hashlib.sha256(layouts.encode()).hexdigest()[:8]
        self._cache_key = (f"{fingerprint}_{layout_tag}_m{self.motion_resolution}_w{self.wrinkle_resolution}"
                           f"_{WRINKLE_ENCODING}")

    # --- indexing ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.entries)

    @property
    def ids(self) -> list[str]:
        return [e["id"] for e in self.entries]

    def index_of(self, utterance_id: str) -> int:
        for i, entry in enumerate(self.entries):
            if entry["id"] == utterance_id:
                return i
        raise KeyError(f"utterance {utterance_id!r} not in split {self.split!r}")

    def __getitem__(self, index: int) -> Sample:
        entry = self.entries[index]
        sample = self.load(index, maps=False)
        if self.maps:
            sample.offsets, sample.motion_maps, sample.wrinkle_maps = self._maps_cached(entry, sample.weights)
        return sample

    def load(self, index: int, maps: bool = False) -> Sample:
        entry = self.entries[index]
        weights = self.weights(index)
        sample = Sample(
            id=entry["id"], subject=entry["subject"], subject_index=int(entry["subject_index"]),
            split=entry["split"], text=entry["text"], audio=read_audio(self.root / entry["audio"]),
            sample_rate=self.sample_rate, fps=self.fps,
            phonemes=[Phoneme.from_list(p) for p in entry["phonemes"]], weights=weights)
        if maps:
            sample.offsets, sample.motion_maps, sample.wrinkle_maps = self._maps_cached(entry, weights)
        return sample

    def weights(self, index: int) -> np.ndarray:
        stored = np.load(self.root / self.entries[index]["weights"])
        return stored[:, self._unit_order].astype(np.float32)

    # --- geometry and maps ------------------------------------------------------------------
    def geometry(self, subject_name: str):
        """Cached `SubjectGeometry` (neutral, crease regions, wrinkle renderer) of a subject."""
        from .geometry import SubjectGeometry

        if subject_name not in self._geometry:
            self._geometry[subject_name] = SubjectGeometry(
                self.template, self.subjects[subject_name], self.wrinkle_resolution)
        return self._geometry[subject_name]

    def neutral_vertices(self, subject_name: str) -> np.ndarray:
        return self.geometry(subject_name).neutral

    def crease_detail(self, subject_name: str, resolution: int) -> np.ndarray:
        """(resolution, resolution) float32 full-fold crease height of the subject (mm, <= 0), in
        the wrinkle layout, image row order: what the fold activation (channel 0) scales."""
        return self.geometry(subject_name).detail_mm(resolution)

    def neutral_albedo(self, subject_name: str, resolution: int | None = None) -> np.ndarray:
        """float32 (H, W, 3) albedo in [0, 1] in the wrinkle maps' layout: the template's albedo
        (sRGB-encoded values, as stored in the PNG) times the subject's skin tone; 0 on texels
        that belong to no part of the UV layout."""
        from PIL import Image
        from scipy.ndimage import map_coordinates

        from .geometry import wrinkle_rasterizer

        resolution = int(resolution or self.wrinkle_resolution)
        rasterizer = wrinkle_rasterizer(self.template, resolution)
        uvs = texel_uvs(rasterizer)                                                 # (H, W, 2)
        image = np.asarray(Image.open(self.template.albedo_path).convert("RGB"), np.float32) / 255.0
        rect = self.template.metadata.get("albedo", {}).get("uv_rect", [0.0, 0.0, 1.0, 1.0])
        ru0, rv0, ru1, rv1 = (float(x) for x in rect)
        h, w = image.shape[:2]
        valid = np.isfinite(uvs).all(axis=-1)
        safe = np.where(valid[..., None], uvs, 0.0)
        columns = (safe[..., 0] - ru0) / (ru1 - ru0) * w - 0.5
        rows = (rv1 - safe[..., 1]) / (rv1 - rv0) * h - 0.5
        # Average the albedo pixels one map texel covers (the PNG is much finer than the maps)
        # before sampling, so small maps do not alias; the finest island sets the filter size.
        step = int(w / (resolution * _uv_scale(rasterizer)))
        if step >= 2:
            from scipy.ndimage import uniform_filter

            image = uniform_filter(image, size=(step, step, 1), mode="nearest")
        albedo = np.stack([map_coordinates(image[..., c], [rows, columns], order=1, mode="nearest")
                           for c in range(3)], axis=-1)
        albedo = albedo * np.asarray(self.subjects[subject_name].skin_tone, np.float32)
        return np.where(valid[..., None], np.clip(albedo, 0, 1), 0.0).astype(np.float32)

    def render(self, subject_name: str, weights: np.ndarray, chunk: int = 256):
        """weights (T, 52) template order -> (offsets (T, V, 3), motion maps, wrinkle maps)."""
        geometry = self.geometry(subject_name)
        motion_rasterizer = self.template.uv_rasterizer(self.motion_resolution, "motion")
        offsets = geometry.offsets(weights)
        t = len(offsets)
        motion = np.empty((t, self.motion_resolution, self.motion_resolution, 3), np.float32)
        wrinkle = np.empty((t, self.wrinkle_resolution, self.wrinkle_resolution, 3), np.float32)
        for start in range(0, t, chunk):
            part = offsets[start:start + chunk]
            motion[start:start + chunk] = motion_rasterizer.rasterize(part)
            wrinkle[start:start + chunk] = geometry.wrinkle_maps(weights[start:start + chunk])
        return offsets, motion, wrinkle

    def _maps_cached(self, entry: dict, weights: np.ndarray):
        if self.cache_dir is None:
            return self.render(entry["subject"], weights)
        path = self.cache_dir / self._cache_key / f"{entry['id']}.npz"
        if path.is_file():
            with np.load(path) as data:
                offsets = self.geometry(entry["subject"]).offsets(weights)
                return offsets, data["motion"].astype(np.float32), data["wrinkle"].astype(np.float32)
        offsets, motion, wrinkle = self.render(entry["subject"], weights)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, motion=motion.astype(np.float16), wrinkle=wrinkle.astype(np.float16))
        tmp.replace(path)
        return offsets, motion, wrinkle

    def iter_frames(self, batch_size: int = 256, shuffle: bool = False, seed: int = 0):
        """Yield dicts of frame batches: subject_index (B,), weights (B, 52), motion_maps,
        wrinkle_maps. Utterances are visited in order (or shuffled with `seed`); frames of one
        batch may come from several utterances."""
        order = np.arange(len(self))
        if shuffle:
            np.random.default_rng(seed).shuffle(order)
        buffers: dict[str, list] = {"subject_index": [], "weights": [], "motion_maps": [], "wrinkle_maps": []}
        count = 0
        for index in order:
            entry = self.entries[int(index)]
            weights = self.weights(int(index))
            _, motion, wrinkle = self._maps_cached(entry, weights)
            buffers["subject_index"].append(np.full(len(weights), int(entry["subject_index"])))
            buffers["weights"].append(weights)
            buffers["motion_maps"].append(motion)
            buffers["wrinkle_maps"].append(wrinkle)
            count += len(weights)
            while count >= batch_size:
                merged = {k: np.concatenate(v) for k, v in buffers.items()}
                yield {k: v[:batch_size] for k, v in merged.items()}
                buffers = {k: [v[batch_size:]] for k, v in merged.items()}
                count -= batch_size
        if count:
            yield {k: np.concatenate(v) for k, v in buffers.items()}
