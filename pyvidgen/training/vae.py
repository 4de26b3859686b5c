"""Training task of the variational autoencoder (Kingma & Welling 2013) on binarised digits.

Loss: the mean negative ELBO per image in nats (one reparameterised sample per image, closed-form
KL). Evaluation on held-out images (digit glyphs never seen in training, or MNIST's t10k file): the
negative ELBO and the k-sample importance-weighted NLL estimate (:mod:`pyvidgen.training.images`).
Pictures: ``samples.png`` (Bernoulli means of decoded prior samples) and ``reconstructions.png``.

Optimiser: Adam (lr 1e-3) by default, which reaches a given bound in far fewer steps than the
paper's Adagrad with hand-tuned step sizes; ``--option optimizer=adagrad`` uses the paper's Adagrad
(lr 0.02 by default, from the paper's {0.01, 0.02, 0.1}). The paper's minibatch is 100
(``--batch-size 100``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from pyvidgen.models.vae import PRESETS, VAE, build_vae
from pyvidgen.training.images import BinarizedImageTask
from pyvidgen.training.loop import TrainConfig

_OPTIMIZERS = ("adam", "adagrad")
_DEFAULT_LR = {"adam": 1e-3, "adagrad": 0.02}
_MODEL_OPTIONS = {"latent": int, "hidden": int, "hidden_layers": int, "activation": str}


class VAETask(BinarizedImageTask):
    """``pyvidgen train vae``: the VAE of a preset (``paper``, ``conv``, ``small``) on binarised digits.

    Task options (``--option KEY=VALUE``), besides those of :mod:`pyvidgen.training.images` (``k``,
    ``mnist``, ``binarize``, ``size``): ``optimizer`` (``adam`` or ``adagrad``), and model overrides
    ``latent``, ``hidden``, ``hidden_layers``, ``activation``.
    """

    name = "vae"

    def make_model(self, config: TrainConfig) -> nn.Module:
        if config.preset not in PRESETS:
            raise ValueError(f"unknown preset {config.preset!r}; expected one of {', '.join(PRESETS)}")
        overrides = {key: kind(config.options[key]) for key, kind in _MODEL_OPTIONS.items() if key in config.options}
        if "size" in config.options or "mnist" in config.options:
            # The model's frame must match the data's: generated digits of `size`, or the IDX file's rows.
            overrides["image_size"] = self._data_size(config)
        return build_vae(config.preset, **overrides)

    def _data_size(self, config: TrainConfig) -> int:
        images = self.train_dataset(config)
        return int(images[0].shape[-1])

    def _optimizer_name(self, config: TrainConfig) -> str:
        name = str(config.options.get("optimizer", "adam")).lower()
        if name not in _OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {_OPTIMIZERS}, got {name!r}")
        return name

    def build_optimizer(self, model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
        name = self._optimizer_name(config)
        lr = config.lr if config.lr is not None else _DEFAULT_LR[name]
        if name == "adagrad":
            return torch.optim.Adagrad(model.parameters(), lr=lr)
        return torch.optim.Adam(model.parameters(), lr=lr)

    def loss(self, model: nn.Module, batch: Tensor) -> Tensor:
        # Through model(batch) rather than negative_elbo(), so DistributedDataParallel sees the forward.
        logits, mean, logvar = model(batch, generator=self.noise_generator(batch))
        return VAE.negative_elbo_from(batch, logits, mean, logvar).mean()
