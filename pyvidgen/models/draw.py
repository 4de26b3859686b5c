"""DRAW (Gregor et al. 2015): a sequential variational autoencoder that draws on a canvas through attention.

At each of T glimpses: ``x_hat = x - sigmoid(c_{t-1})``; ``r_t = read(x, x_hat, h_dec_{t-1})``;
``h_enc = LSTM_enc([r_t, h_dec_{t-1}])``; ``z_t ~ Q(z | h_enc)`` (diagonal Gaussian, reparameterised);
``h_dec = LSTM_dec(z_t)``; ``c_t = c_{t-1} + write(h_dec)``. The image's distribution is a Bernoulli per
pixel with logits ``c_T``; the prior of every ``z_t`` is N(0, I). The loss per image (nats) is
``-log p(x | c_T) + sum_t KL(Q(z_t) || N(0, I))``, the negative ELBO. States start at zero and the first
canvas is zero (a grey 0.5 picture), as in the paper.

With ``attention=False`` (the paper's baseline) the read is the whole image and error image and the write is a
linear layer to the whole canvas; everything else is the same network.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn

from pyvidgen.models.variational import (
    bernoulli_log_likelihood,
    gaussian_kl,
    gaussian_log_prob,
    importance_weighted_nll,
    reparameterize,
)
from pyvidgen.nn.draw_attention import DrawAttention, DrawNoAttention


@dataclass(frozen=True)
class DRAWConfig:
    """Sizes of a :class:`DRAW` network (defaults: the paper's binarised MNIST network).

    Attributes:
        channels: image channels C.
        height: image height H.
        width: image width W.
        glimpses: T, the number of read/write steps (64).
        encoder_size: units of the encoder LSTM (256).
        decoder_size: units of the decoder LSTM (256).
        z_size: latent units per step (100).
        read_n: read glimpse size N (2 x 2).
        write_n: write patch size (5 x 5).
        attention: False for the paper's baseline without attention (whole-image read and write).
    """

    channels: int = 1
    height: int = 28
    width: int = 28
    glimpses: int = 64
    encoder_size: int = 256
    decoder_size: int = 256
    z_size: int = 100
    read_n: int = 2
    write_n: int = 5
    attention: bool = True


PRESETS = {
    "paper": DRAWConfig(),
    # Minutes of CPU training: 16 glimpses instead of 64 and smaller LSTMs. With a quarter of the glimpses
    # the paper's 2 x 2 read leaves the encoder too little to see (trained alike, 117 against 78 nats for
    # the no-attention baseline at 3000 steps); a 5 x 5 read, as the paper's CIFAR network, sees enough.
    "small": DRAWConfig(glimpses=16, encoder_size=128, decoder_size=128, z_size=20, read_n=5),
}


class DrawSteps(NamedTuple):
    """What happened at each glimpse, for pictures.

    Attributes:
        canvases: (T, B, C, H, W), ``sigmoid(c_t)`` after each step t = 1..T.
        write: (T, B, 5) write attention (gx, gy, delta, sigma2, gamma) in 0-based pixels, None without attention.
        read: (T, B, 5) read attention likewise, None without attention or when nothing was read (generation).
    """

    canvases: Tensor
    write: Tensor | None
    read: Tensor | None


class _Pass(NamedTuple):
    logits: Tensor  # (B, C, H, W), c_T
    kl: Tensor  # (B,), sum over steps of KL(Q(z_t) || N(0, I))
    log_ratio: Tensor | None  # (B,), sum over steps of log N(z_t; 0, I) - log Q(z_t | ...), when asked for
    steps: DrawSteps | None


def _check_config(config: DRAWConfig) -> None:
    sizes = ("channels", "height", "width", "glimpses", "encoder_size", "decoder_size", "z_size", "read_n", "write_n")
    for key in sizes:
        value = getattr(config, key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"DRAWConfig: {key} must be a positive int, got {value!r}")
    if not isinstance(config.attention, bool):
        raise ValueError(f"DRAWConfig: attention must be a bool, got {config.attention!r}")


class DRAW(nn.Module):
    """The DRAW network: encoder LSTM, Gaussian posterior per step, decoder LSTM, read and write heads.

    Args:
        config: sizes (see :class:`DRAWConfig` and :data:`PRESETS`).

    Attributes:
        heads: :class:`pyvidgen.nn.DrawAttention` or, without attention, :class:`pyvidgen.nn.DrawNoAttention`.
        encoder: LSTMCell(read features + decoder_size, encoder_size).
        posterior: Linear(encoder_size, 2 z_size), mean and log-variance of Q(z_t | h_enc).
        decoder: LSTMCell(z_size, decoder_size).

    Shape:
        - x: (B, C, H, W), binary (or in [0, 1]: the Bernoulli likelihood takes probabilities as targets)
        - :meth:`negative_elbo`, :meth:`nll_estimate`: (B,) nats per image
    """

    def __init__(self, config: DRAWConfig | None = None) -> None:
        super().__init__()
        config = config or DRAWConfig()
        _check_config(config)
        self.config = config
        c, h, w, dec = config.channels, config.height, config.width, config.decoder_size
        if config.attention:
            self.heads = DrawAttention(dec, h, w, config.read_n, config.write_n, c)
        else:
            self.heads = DrawNoAttention(dec, h, w, c)
        self.encoder = nn.LSTMCell(self.heads.read_features + dec, config.encoder_size)
        self.posterior = nn.Linear(config.encoder_size, 2 * config.z_size)
        self.decoder = nn.LSTMCell(config.z_size, dec)

    # ------------------------------------------------------------------------------------------ passes
    def _check(self, x: Tensor, method: str) -> None:
        c = self.config
        expected = (c.channels, c.height, c.width)
        if not isinstance(x, Tensor) or x.dim() != 4 or tuple(x.shape[1:]) != expected:
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"DRAW.{method}: x must be (B, {', '.join(map(str, expected))}), got {got}")

    def _zeros(self, x: Tensor, size: int) -> Tensor:
        return x.new_zeros(x.shape[0], size)

    def _infer(self, x: Tensor, generator: torch.Generator | None, record: bool, weights: bool = False) -> _Pass:
        """Run the T glimpses of the inference network on ``x``, drawing each z_t from Q.

        ``weights``: also sum the importance log-ratios (only the NLL estimate needs them; training skips
        their per-glimpse arithmetic)."""
        cfg = self.config
        h_enc, c_enc = self._zeros(x, cfg.encoder_size), self._zeros(x, cfg.encoder_size)
        h_dec, c_dec = self._zeros(x, cfg.decoder_size), self._zeros(x, cfg.decoder_size)
        canvas = torch.zeros_like(x)
        # The posterior's statistics (and draws) of every glimpse; the KL and the importance log-ratios are
        # computed once over all of them after the loop: a handful of operations instead of a handful per glimpse.
        means, logvars, draws = [], [], []
        canvases, reads, writes = [], [], []
        for _ in range(cfg.glimpses):
            if record and cfg.attention:
                reads.append(self.heads.params(h_dec, "read").stacked())
            x_hat = x - torch.sigmoid(canvas)
            r = self.heads.read(x, x_hat, h_dec)
            h_enc, c_enc = self.encoder(torch.cat((r, h_dec.to(r.dtype)), dim=1), (h_enc, c_enc))
            # The Gaussian's statistics in at least float32: under autocast exp(logvar) of a bf16 logvar is coarse.
            mean, logvar = self.posterior(h_enc).to(torch.promote_types(x.dtype, torch.float32)).chunk(2, dim=-1)
            z = reparameterize(mean, logvar, generator)
            means.append(mean)
            logvars.append(logvar)
            if weights:
                draws.append(z)
            h_dec, c_dec = self.decoder(z, (h_dec, c_dec))
            canvas = canvas + self.heads.write(h_dec)
            if record:
                if cfg.attention:
                    writes.append(self.heads.params(h_dec, "write").stacked())
                canvases.append(torch.sigmoid(canvas))
        mean, logvar = torch.stack(means, dim=1), torch.stack(logvars, dim=1)  # (B, T, z_size)
        kl = gaussian_kl(mean, logvar)
        log_ratio = None
        if weights:
            z = torch.stack(draws, dim=1)
            prior = torch.zeros_like(z)
            log_ratio = gaussian_log_prob(z, prior, prior) - gaussian_log_prob(z, mean, logvar)
        steps = self._steps(canvases, writes, reads) if record else None
        return _Pass(canvas, kl, log_ratio, steps)

    def _steps(self, canvases: list[Tensor], writes: list[Tensor], reads: list[Tensor]) -> DrawSteps:
        return DrawSteps(
            torch.stack(canvases),
            torch.stack(writes) if writes else None,
            torch.stack(reads) if reads else None,
        )

    # ------------------------------------------------------------------------------------------ model
    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """The negative ELBO per image, (B,) nats (same as :meth:`negative_elbo`)."""
        return self.negative_elbo(x, generator)

    def negative_elbo(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """``-log p(x | z_1..T) + sum_t KL(Q(z_t) || N(0, I))`` for one draw of the z_t, in nats.

        Args:
            x: (B, C, H, W) binary images.
            generator: the noise of the reparameterised z_t (default: torch's global generator).

        Returns:
            (B,) nats per image, computed in at least float32.
        """
        self._check(x, "negative_elbo")
        out = self._infer(x, generator, record=False)
        logits = out.logits.to(out.kl.dtype)
        return out.kl - bernoulli_log_likelihood(logits, x.to(logits.dtype))

    def nll_estimate(self, x: Tensor, k: int, generator: torch.Generator | None = None, max_rows: int = 8192) -> Tensor:
        """Importance-weighted estimate of ``-log p(x)`` with ``k`` draws of the whole latent sequence.

        ``log w = log p(x | z_1..T) + sum_t log N(z_t; 0, I) - sum_t log Q(z_t | ...)`` and the estimate is
        ``-log mean_k w`` (Burda et al. 2016): an upper bound on the NLL that tightens as k grows (k = 1 is
        the negative ELBO with a sampled rather than analytic KL).

        Args:
            x: (B, C, H, W) binary images.
            k: importance samples per image (>= 1).
            generator: the noise of the z_t.
            max_rows: at most this many (sample, image) rows run at once; the k draws go in chunks.

        Returns:
            (B,) nats per image.
        """
        self._check(x, "nll_estimate")
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise ValueError(f"DRAW.nll_estimate: k must be a positive int, got {k!r}")
        batch = x.shape[0]
        chunk = max(1, min(k, max_rows // max(batch, 1)))
        log_weights = []
        for start in range(0, k, chunk):
            n = min(chunk, k - start)
            xs = x.repeat(n, 1, 1, 1)  # sample-major: row s * B + b is draw s of image b
            out = self._infer(xs, generator, record=False, weights=True)
            logits = out.logits.to(out.log_ratio.dtype)
            log_w = bernoulli_log_likelihood(logits, xs.to(logits.dtype)) + out.log_ratio
            log_weights.append(log_w.view(n, batch))
        return importance_weighted_nll(torch.cat(log_weights))

    def reconstruct_steps(self, x: Tensor, generator: torch.Generator | None = None) -> DrawSteps:
        """The canvas after each glimpse while reading ``x`` (z_t drawn from Q), with both attention windows.

        Args:
            x: (B, C, H, W) binary images.
            generator: the noise of the z_t.

        Returns:
            :class:`DrawSteps` with canvases (T, B, C, H, W) and, with attention, read and write (T, B, 5).
        """
        self._check(x, "reconstruct_steps")
        return self._infer(x, generator, record=True).steps

    def generate(
        self, n: int, generator: torch.Generator | None = None, return_steps: bool = False
    ) -> Tensor | tuple[Tensor, DrawSteps]:
        """Draw ``n`` images from the prior: z_t ~ N(0, I), decoder, write, T times.

        Args:
            n: images to draw.
            generator: the noise (a CPU generator works for a model on any device).
            return_steps: also return the :class:`DrawSteps` (canvases and write windows; no reads).

        Returns:
            (n, C, H, W) Bernoulli means ``sigmoid(c_T)``, and the steps if asked.
        """
        cfg = self.config
        param = next(self.parameters())
        h_dec = c_dec = param.new_zeros(n, cfg.decoder_size)
        canvas = param.new_zeros(n, cfg.channels, cfg.height, cfg.width)
        canvases, writes = [], []
        for _ in range(cfg.glimpses):
            z = _standard_normal((n, cfg.z_size), param, generator)
            h_dec, c_dec = self.decoder(z, (h_dec, c_dec))
            if return_steps and cfg.attention:
                writes.append(self.heads.params(h_dec, "write").stacked())
            canvas = canvas + self.heads.write(h_dec)
            if return_steps:
                canvases.append(torch.sigmoid(canvas))
        images = torch.sigmoid(canvas)
        return (images, self._steps(canvases, writes, [])) if return_steps else images

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """(n, C, H, W) Bernoulli means of images drawn from the prior (:meth:`generate` without the steps)."""
        return self.generate(n, generator)

    def reconstruct(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """(B, C, H, W) Bernoulli means ``sigmoid(c_T)`` after reading ``x`` (z_t drawn from Q)."""
        self._check(x, "reconstruct")
        return torch.sigmoid(self._infer(x, generator, record=False).logits)

    def config_dict(self) -> dict:
        return asdict(self.config)


def _standard_normal(shape: tuple[int, ...], like: Tensor, generator: torch.Generator | None) -> Tensor:
    """N(0, I) noise of ``like``'s dtype and device, drawn from ``generator`` on its own device."""
    if generator is None:
        return torch.randn(shape, dtype=like.dtype, device=like.device)
    noise = torch.randn(shape, generator=generator, device=generator.device, dtype=like.dtype)
    return noise.to(like.device)


def build_draw(preset: str = "small", **overrides: object) -> DRAW:
    """A :class:`DRAW` of a preset ("small", "paper"), fields overridden by keyword (e.g. ``attention=False``)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; expected one of {', '.join(PRESETS)}")
    unknown = set(overrides) - set(asdict(PRESETS[preset]))
    if unknown:
        raise ValueError(f"build_draw: unknown DRAWConfig fields {sorted(unknown)}")
    return DRAW(DRAWConfig(**{**asdict(PRESETS[preset]), **overrides}))
