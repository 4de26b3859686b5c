"""Sampling benchmark of the Video Pixel Network: the cached sampler against the naive one.

Both samplers draw one frame sub-pixel by sub-pixel from the same noise; the naive one runs the whole
decoder for every sub-pixel, the cached one computes each decoder layer once per sub-pixel from the
outputs it cached at earlier ones.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from pyvidgen.models.video_pixel_network import build_vpn
from pyvidgen.models.vpn_sampling import _noise, sample_frame_cached, sample_frame_naive


def time_vpn_sampling(
    preset: str = "small", size: int = 64, videos: int = 1, seed: int = 0, device: torch.device | str = "cpu"
) -> list[dict[str, Any]]:
    """Seconds to sample one ``size`` x ``size`` frame with each sampler (an untrained model: the work is the same).

    Returns:
        One dict per sampler: ``preset, size, videos, channels, sampler, seconds, speedup_vs_naive, equal``
        (whether the two samplers returned the same frame).
    """
    torch.manual_seed(seed)
    model = build_vpn(preset).to(device).eval()
    channels = model.config.channels
    with torch.no_grad():
        context = torch.rand(
            videos, model.config.lstm_channels, size, size, generator=torch.Generator().manual_seed(seed)
        )
        conditions = model.conditioning(context.to(device))
    noise = _noise(model, (videos, channels, size, size), torch.Generator().manual_seed(seed), conditions[0])
    frames, seconds = {}, {}
    for name, sampler in (("cached", sample_frame_cached), ("naive", sample_frame_naive)):
        start = time.perf_counter()
        frames[name] = sampler(model, conditions, noise)
        seconds[name] = time.perf_counter() - start
    equal = bool(torch.equal(frames["cached"], frames["naive"]))
    return [
        {
            "preset": preset,
            "size": size,
            "videos": videos,
            "channels": channels,
            "sampler": name,
            "seconds": seconds[name],
            "speedup_vs_naive": seconds["naive"] / seconds[name],
            "equal": equal,
        }
        for name in ("naive", "cached")
    ]
